"""Model governance: the promotion gate, the only code that moves aliases, the audit trail, the emergency fallback,
the guardian that watches the champion, and model cards."""
