"""The studies from the command line.

    python -m peftlab.studies list                       # id, seeds, steps, fresh/stale/missing, title
    python -m peftlab.studies run 06_prompt [--device cuda] [--threads 2]
    python -m peftlab.studies run --all
    python -m peftlab.studies check 06_prompt            # exit 0: the replica agrees with the stored curve

The device is the one asked for (`--device`, default cpu), never switched on what torch finds.
Exit status: 0 done (or agree), 1 the check disagrees, 2 a bad argument (an unknown id, a device).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from .. import studies
from ..checkpoint import CHECKPOINT_DIR


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--results", type=Path, default=studies.RESULTS_DIR, help="the results directory")
    common.add_argument("--checkpoints", type=Path, default=CHECKPOINT_DIR, help="the base checkpoints' directory")
    parser = argparse.ArgumentParser(prog="python -m peftlab.studies", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", parents=[common], help="one line per study: id, seeds, steps, status")
    run = sub.add_parser("run", parents=[common], help="run studies in full and write their results")
    run.add_argument("ids", nargs="*", metavar="ID")
    run.add_argument("--all", action="store_true", help="every declared study")
    check = sub.add_parser("check", parents=[common], help="re-run a cheap replica, compare with the stored curve")
    check.add_argument("ids", nargs=1, metavar="ID")
    check.add_argument("--steps", type=int, default=None, help="steps of the replica (default: eval_every)")
    check.add_argument("--tolerance", type=float, default=studies.CHECK_TOLERANCE)
    for p in (run, check):
        p.add_argument("--device", default="cpu", help="cpu (default) or cuda; never chosen automatically")
        p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    known = studies.all_studies()
    if args.command == "list":
        width = max(len(i) for i in known)
        for s in known.values():
            steps = ", ".join(f"{m.label} {m.steps}" for m in s.methods)
            state = studies.status(s, args.results, args.checkpoints)
            print(f"{s.id:<{width}} seeds {len(s.seeds)}  steps {steps}  {state:<7}  {s.title}")
        return 0
    ids = list(known) if args.command == "run" and args.all else args.ids
    if not ids:
        parser.error("run needs study ids or --all; known studies: " + ", ".join(known))
    unknown = [i for i in ids if i not in known]
    if unknown:  # before anything runs or is written
        parser.error(f"unknown study {', '.join(map(repr, unknown))}; known studies: {', '.join(known)}")
    try:
        studies.check_device(args.device)
    except ValueError as e:
        parser.error(str(e))
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be a positive int, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.command == "run":
        for i in ids:
            results = studies.run(known[i], directory=args.results, checkpoints=args.checkpoints,
                                  device=args.device)
            print(f"{i}: {results['wall_time_s']:.0f} s, written to {studies.results_path(i, args.results)}")
            for c in results["claims"]:
                note = f"  ({c['budget_note']})" if c.get("budget_note") else ""
                print(f"  {c['id']}: {c.get('text', c['verdict'])}{note}")
        return 0
    outcome = studies.check(known[ids[0]], steps=args.steps, tolerance=args.tolerance, directory=args.results,
                            checkpoints=args.checkpoints, device=args.device)
    print(outcome.message)
    return outcome.exit_code


if __name__ == "__main__":
    sys.exit(main())
