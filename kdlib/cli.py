"""Command line: ``python -m kdlib run ...`` and ``python -m kdlib export ...``."""
from __future__ import annotations

import argparse
import ast
import json
import sys
from typing import Any, Sequence

from kdlib.config import DATASETS, PROFILES


def _parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--set expects KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    return key, value


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["export"]:  # its options belong to kdlib.data.export_main
        from kdlib.data import export_main

        return int(export_main(argv[1:]) or 0)
    parser = argparse.ArgumentParser(prog="kdlib", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run methods x seeds on a dataset and write DIR/results.csv")
    run.add_argument("--dataset", required=True, help=f"one of {', '.join(DATASETS)}")
    run.add_argument("--methods", required=True, help="comma-separated method names")
    run.add_argument("--seeds", type=int, default=None, help="number of seeds (default: the profile's)")
    run.add_argument("--profile", default="quick", help=f"one of {', '.join(PROFILES)}")
    run.add_argument("--out", required=True, help="output directory")
    run.add_argument("--device", default="cpu")
    run.add_argument("--data-root", default=None, help="data root (default: $KDLIB_DATA)")
    run.add_argument("--download", action="store_true", help="allow torchvision to download missing data")
    run.add_argument("--set", dest="overrides", action="append", type=_parse_override, default=[],
                     metavar="KEY=VALUE", help="override any ExperimentConfig field, e.g. --set e2=20")
    run.add_argument("--no-progress", action="store_true")
    sub.add_parser("export", help="export a torchvision copy of a dataset into the npz cache format "
                                  "(see `kdlib export --help`)")
    args = parser.parse_args(argv)
    from kdlib.runner import run_experiments

    overrides = dict(args.overrides)
    if args.data_root:
        overrides["data_root"] = args.data_root
    if args.download:
        overrides["download"] = True
    try:
        df = run_experiments(args.dataset, args.methods, args.seeds, args.profile, args.out,
                             device=args.device, overrides=overrides, progress=not args.no_progress)
    except (ValueError, FileNotFoundError) as err:
        print(f"kdlib: error: {err}", file=sys.stderr)
        return 2
    from kdlib.analysis import final_accuracy

    fin = final_accuracy(df).groupby("method")["test_accuracy"].agg(["mean", "max", "std", "count"])
    print(json.dumps({m: {k: float(v) for k, v in row.items()} for m, row in fin.iterrows()}, indent=1))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
