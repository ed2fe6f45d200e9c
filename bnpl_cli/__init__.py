"""The single ``bnpl`` command line: one entry point that starts every process."""
