"""Command line: ``python -m kdlib run ...``, ``python -m kdlib aggregate --out DIR``,
``python -m kdlib recheck RECORD.json ...`` and ``python -m kdlib export ...``.

Every error a user can fix (a bad flag or ``--set`` value, an unusable ``--out``, a damaged or misaligned data
or teacher file) is checked before any compute and printed as one line ``kdlib: error: ...`` naming the field
or file, what was expected, what was found and the fix; the exit code is 2. Cells lost to a dead worker
exit with 1 after the finished ones are stored.
"""
from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any, NoReturn, Sequence

from kdlib import cpu_kernels
from kdlib.data import export_main
from kdlib.errors import CellsFailed, KdlibError
from kdlib.experiments.recheck import check_recheckable, rerun, verdict
from kdlib.experiments.runner import run_experiments
from kdlib.experiments.store import aggregate, method_summaries, prepare_out_dir, write_record
from kdlib.names import DATASETS, PROFILES


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``kdlib: error: ...``, exit 2) instead of usage + message."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"kdlib: error: {message}; see `{self.prog} --help`\n")


def _parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--set expects KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw  # a string; validation names the field if it expected a number
    return key.strip(), value


def _parse_seed_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seed-list expects comma-separated integers, e.g. 3,7; got {text!r}") \
            from None


def _one_line(err: BaseException) -> str:
    return " ".join(part.strip() for part in str(err).splitlines() if part.strip())


def _warning_line(message, category, filename, lineno, line=None) -> str:
    return f"kdlib: warning: {_one_line(message) if isinstance(message, Warning) else message}\n"


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kdlib", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="run methods x seeds on a dataset and write DIR/results.csv")
    run.add_argument("--dataset", required=True, help=f"one of {', '.join(DATASETS)}")
    run.add_argument("--methods", required=True, help="comma-separated method names")
    run.add_argument("--seeds", type=int, default=None, help="number of seeds, >= 1 (default: the profile's)")
    run.add_argument("--seed-list", type=_parse_seed_list, default=None, metavar="S,S,...",
                     help="run these seeds only (instead of --seeds), under the keys that the whole column's "
                          "command gives them, e.g. to spread one column over several processes")
    run.add_argument("--profile", default="quick", help=f"one of {', '.join(PROFILES)}")
    run.add_argument("--out", required=True, help="output directory (created; must be writable)")
    run.add_argument("--device", default="cpu")
    run.add_argument("--data-root", default=None, help="data root (default: $KDLIB_DATA)")
    run.add_argument("--download", action="store_true",
                     help="allow network downloads of missing data or the authors' teacher logits")
    run.add_argument("--set", dest="overrides", action="append", type=_parse_override, default=[],
                     metavar="KEY=VALUE", help="override any ExperimentConfig field, e.g. --set e2=20")
    run.add_argument("--workers", type=int, default=1,
                     help="run cells in N processes (default 1: in this one); with submitit, N jobs at a time")
    run.add_argument("--threads", type=int, default=1,
                     help="intra-op threads per run (default 1; recorded and part of the record key)")
    run.add_argument("--executor", default="local", choices=["local", "submitit"],
                     help="local: this machine; submitit: a SLURM job array (or --cluster local)")
    run.add_argument("--cluster", default=None, help="submitit cluster: slurm (default if available), local, debug")
    run.add_argument("--partition", default=None, help="SLURM partition (submitit)")
    run.add_argument("--timeout-min", type=int, default=60, help="per-job time limit in minutes (submitit)")
    run.add_argument("--no-wait", action="store_true",
                     help="submitit: submit and return; then `kdlib aggregate --out DIR` when the jobs are done")
    run.add_argument("--no-progress", action="store_true")
    run.add_argument("--cpu-kernels", default=None, choices=cpu_kernels.CHOICES,
                     help="pin the CPU kernels (avx2: the records regenerate bit for bit on x86-64 hosts of the same "
                          "CPU model with AVX2; recorded and part of the record key); the command re-starts itself under the pin. "
                          "Default: $KDLIB_CPU_KERNELS, else native")
    agg = sub.add_parser("aggregate", help="rewrite DIR/results.csv and DIR/config.json from DIR/runs/")
    agg.add_argument("--out", required=True, help="output directory of a run")
    chk = sub.add_parser("recheck", help="re-run stored run records with this code and compare (exit 1 if one "
                                         "did not come back); a pinned record is re-run under its pin, a native "
                                         "one natively, or under $KDLIB_CPU_KERNELS when that is set")
    chk.add_argument("records", nargs="+", help="run record files (e.g. archive/cifar10_reduced/authors/runs/*.json)")
    chk.add_argument("--rows", type=int, default=None,
                     help="re-run only the epochs of the first N logged points and compare those (default: the "
                          "whole run: same branch and final accuracy within 0.01)")
    chk.add_argument("--data-root", default=None, help="data root (default: $KDLIB_DATA)")
    chk.add_argument("--save", default=None, metavar="DIR",
                     help="also store each re-run record in DIR/runs/, a run store like --out (to compare row by row)")
    sub.add_parser("export", help="export a torchvision copy of a dataset into the npz cache format "
                                  "(see `kdlib export --help`)")
    return parser


def _relaunch_pinned(pin: str, argv: Sequence[str]) -> int:
    """Run ``python -m kdlib ARGV`` in a child started under CPU-kernel pin ``pin`` (the libraries read it only at
    start-up) and return its exit code; its output goes to this process's."""
    return subprocess.call([sys.executable, "-m", "kdlib", *argv], env=cpu_kernels.environment_for(pin))


def _run(args: argparse.Namespace) -> int:
    overrides = dict(args.overrides)
    if args.data_root:
        overrides["data_root"] = args.data_root
    if args.download:
        overrides["download"] = True
    options: dict[str, Any] = dict(cluster=args.cluster, partition=args.partition, timeout_min=args.timeout_min,
                                   wait=not args.no_wait,
                                   parallelism=args.workers if args.workers > 1 else None)
    if args.seed_list is not None and args.seeds is not None:
        raise KdlibError(f"--seeds {args.seeds} and --seed-list {','.join(map(str, args.seed_list))}: give one; fix: "
                         "--seeds N for seeds 0..N-1, or --seed-list for chosen seeds")
    seeds = args.seed_list if args.seed_list is not None else args.seeds
    df = run_experiments(args.dataset, args.methods, seeds, args.profile, args.out, device=args.device,
                         overrides=overrides, progress=not args.no_progress, workers=args.workers,
                         threads=args.threads, executor=args.executor,
                         executor_options=options if args.executor == "submitit" else None)
    if args.executor == "submitit" and args.no_wait:
        return 0
    print(json.dumps(method_summaries(df), indent=1))
    missing = df.attrs.get("missing") or []
    if missing:
        print(f"kdlib: warning: {len(missing)} requested run(s) not stored yet: {', '.join(missing)}",
              file=sys.stderr)
    return 0


def _aggregate(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if not (out / "runs").is_dir():
        raise KdlibError(f"--out {out}: expected a run directory holding runs/, found none; fix: pass the --out "
                         f"of a `kdlib run`")
    df = aggregate(out)
    n = df[["dataset", "method", "seed", "config_hash"]].drop_duplicates()
    print(json.dumps(dict(records=len(n), configs=int(df["config_hash"].nunique()) if len(df) else 0,
                          results=str(out / "results.csv")), indent=1))
    return 0


def _recheck(args: argparse.Namespace) -> int:
    if args.rows is not None and args.rows < 1:
        raise KdlibError(f"--rows {args.rows}: expected a number of logged points >= 1, or no --rows for the "
                         "whole run")
    records = []
    for name in args.records:  # every file is read and checked before any compute
        path = Path(name)
        try:
            rec = json.loads(path.read_text())
        except FileNotFoundError:
            raise KdlibError(f"{path}: no such record file; fix: pass the path of a stored run record") from None
        except json.JSONDecodeError as exc:
            raise KdlibError(f"{path}: not valid JSON ({exc}); fix: pass a run record written by `kdlib run`") \
                from None
        check_recheckable(rec, args.rows, str(path))
        records.append((path, rec))
    save = Path(args.save) if args.save else None
    if save is not None:
        prepare_out_dir(save)
    failed = 0
    for path, rec in records:
        new = rerun(rec, args.rows, args.data_root)
        if save is not None:
            write_record(save, new)
        result = dict(record=str(path), **verdict(rec, new, args.rows))
        failed += not result["ok"]
        print(json.dumps(result), flush=True)
    if failed:
        print(f"kdlib: error: {failed} of {len(records)} record(s) did not come back", file=sys.stderr)
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    saved = warnings.formatwarning
    warnings.formatwarning = _warning_line
    try:
        if argv[:1] == ["export"]:  # its options belong to kdlib.data.export_main
            return int(export_main(argv[1:]) or 0)
        args = _build_parser().parse_args(argv)
        pin = getattr(args, "cpu_kernels", None) or cpu_kernels.requested()
        if args.command in ("run", "recheck") and cpu_kernels.needs_restart(pin):  # before any compute; the
            # child checks that the pin took effect
            return _relaunch_pinned(pin, argv)
        cpu_kernels.in_effect()  # a pin asked for by the environment must have taken effect
        return {"run": _run, "aggregate": _aggregate, "recheck": _recheck}[args.command](args)
    except CellsFailed as err:
        print(f"kdlib: error: {_one_line(err)}", file=sys.stderr)
        return 1
    except (KdlibError, ValueError, FileNotFoundError, NotADirectoryError, PermissionError, ImportError) as err:
        print(f"kdlib: error: {_one_line(err)}", file=sys.stderr)
        return 2
    finally:
        warnings.formatwarning = saved


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
