"""``bnpl generate``: synthetic requests as JSON lines, their outcomes in a file of their own, drift on request;
the drift options ``bnpl send`` shares."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from datagen.drift import DRIFT_KINDS, Drift, make_drift


def add_drift_arguments(parser: argparse.ArgumentParser, kinds: Sequence[str] = tuple(DRIFT_KINDS)) -> None:
    """``--drift KIND`` and its knobs: ``--drift-start``, ``--drift-share``, ``--drift-factor``,
    ``--drift-strength``."""
    parser.add_argument(
        "--drift",
        choices=list(kinds),
        help="drift from --drift-start on: covariate (a riskier customer population), new-category "
        "(payment_provider 'zip', never seen by the models)"
        + (
            ", concept (defaults of electronics purchases x --drift-factor; requests unchanged)"
            if "concept" in kinds
            else ""
        )
        + "; none when not given",
    )
    parser.add_argument(
        "--drift-start", type=int, metavar="ROW", help="row index where the drift begins (not given: half-way)"
    )
    parser.add_argument(
        "--drift-share",
        type=float,
        metavar="SHARE",
        help="share of rows from the start on that drift (covariate, new-category; not given: 0.5 and 0.1)",
    )
    if "concept" in kinds:
        parser.add_argument(
            "--drift-factor", type=float, metavar="X", help="concept: default probability multiplier (not given: 2.0)"
        )
    parser.add_argument(
        "--drift-strength",
        type=float,
        metavar="X",
        help="covariate: scales the income, credit and latent-risk shifts (not given: 1.0)",
    )


def drifts_from_args(args: argparse.Namespace, rows: int) -> list[Drift]:
    """The drift the options ask for (empty without ``--drift``); a misuse raises ``CliError`` (exit 2)."""
    from bnpl_cli.main import CliError

    knobs = {
        "--drift-start": args.drift_start,
        "--drift-share": args.drift_share,
        "--drift-factor": getattr(args, "drift_factor", None),
        "--drift-strength": args.drift_strength,
    }
    if args.drift is None:
        given = [name for name, value in knobs.items() if value is not None]
        if given:
            raise CliError(f"{', '.join(given)} without --drift: give --drift KIND", code=2)
        return []
    start = rows // 2 if args.drift_start is None else args.drift_start
    if not 0 <= start < rows:
        raise CliError(f"--drift-start {start}: expected a row index in 0 … {rows - 1}", code=2)
    try:
        drift = make_drift(
            args.drift,
            start,
            share=args.drift_share,
            factor=knobs["--drift-factor"],
            strength=args.drift_strength,
        )
    except ValueError as exc:
        raise CliError(f"--drift {args.drift}: {exc}", code=2) from None
    return [drift]


def describe(drifts: Sequence[Drift]) -> str:
    """`` with a covariate drift from row 5,000`` (empty without drift)."""
    names = {cls: name for name, cls in DRIFT_KINDS.items()}
    return "".join(f", {names[type(d)]} drift from row {d.start_index or 0:,}" for d in drifts)


def run(args: argparse.Namespace) -> int:
    """Write ``--rows`` requests to ``--out`` and, with ``--outcomes-out``, their ground truth to that file."""
    from bnpl_cli.main import CliError
    from datagen import generate
    from datagen.outcomes import ground_truth_outcomes, write_outcomes

    if args.rows < 1:
        raise CliError(f"--rows {args.rows}: expected at least 1", code=2)
    drifts = drifts_from_args(args, args.rows)
    data = generate(args.rows, seed=args.seed, drifts=drifts)
    out = Path(args.out)
    data.write_requests(out)
    print(
        f"wrote {len(data):,} requests to {out}{describe(drifts)} "
        f"({data.will_default.mean():.2%} of them default in the ground truth)"
    )
    if args.outcomes_out:
        written = write_outcomes(ground_truth_outcomes(data, seed=args.seed), Path(args.outcomes_out))
        print(
            f"wrote {written:,} outcomes to {args.outcomes_out}, keyed by transaction_id, every loan as if funded "
            "(load with `bnpl outcomes load`)"
        )
    else:
        print("no outcomes written: the requests hold none (--outcomes-out FILE writes their ground truth)")
    return 0
