"""tools/archive_table2.py --dry-run: what is stored, what a sitting left in flight (its checkpoints), and the
lane-hours left at the stored runs' median wall time, or estimated from a finished reference column."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("archive_table2", REPO / "tools" / "archive_table2.py")
tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tool)


def test_dry_run_reports_stored_in_flight_and_hours_left(tmp_path, capsys, monkeypatch):
    authors = tmp_path / "cifar10" / "authors"
    (authors / "runs").mkdir(parents=True)
    for seed, wall in ((0, 3600.0), (1, 5400.0), (4, 4000.0)):
        (authors / "runs" / f"cifar10__gradient__seed{seed}__{seed:016x}.json").write_text(
            json.dumps({"summary": {"wall_time": wall}, "config": {"epochs": 100}}))
    (authors / ".partial").mkdir()
    torch.save({"settings": {"seed": 2, "epochs": 100}, "epoch": 37},
               authors / ".partial" / "cifar10__gradient__seed2__00000000000000aa.0.pt")
    (authors / ".partial" / "cifar10__gradient__seed3__00000000000000bb.0.pt").write_bytes(b"torn")
    hyperopt = tmp_path / "fashion_mnist" / "authors" / ".partial"
    hyperopt.mkdir(parents=True)
    torch.save({"settings": {"seed": 5, "epochs": 40}, "epoch": 3},
               hyperopt / "fashion_mnist__hyperopt__seed5__00000000000000cc.2.pt")  # its third training

    monkeypatch.setattr(tool, "REFERENCE", tmp_path / "nowhere")  # no reference column: nothing is estimated
    assert tool.main(["--dry-run", "--out-root", str(tmp_path)]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("#")]
    grad = next(ln for ln in lines if ln.startswith("# cifar10 gradient"))
    assert grad.startswith("# cifar10 gradient: 3/10 stored, 1.11 h a run (median of 3); in flight: seed 2: "
                           "epoch 37/100, cifar10__gradient__seed3__00000000000000bb.0.pt: unreadable")
    hyper = next(ln for ln in lines if ln.startswith("# fashion_mnist hyperopt"))
    assert hyper == "# fashion_mnist hyperopt: 0/10 stored; in flight: seed 5: epoch 3/40 of training 2"
    # 7 runs left, seed 2 already 37 % done, at the median 4000 s: 7.4 lane-hours, 3.7 h on the default 2 lanes
    assert tool.in_flight("cifar10", "gradient", tmp_path)[1] == pytest.approx(0.37)
    assert lines[-1].startswith("# left: about 7.4 lane-hours (7.4 at stored runs' medians, 0.0 estimated; 3.7 h "
                                "on 2 lanes; the in-flight runs' epochs done subtracted")
    # hyperopt's third training (k = 2) of its hyperopt_evals, 3 of 40 epochs in
    from kdlib.experiments.profiles import resolve_config
    evals = resolve_config("fashion_mnist", "hyperopt", "paper", 0, **tool.authors_protocol("hyperopt", "fashion_mnist")
                           ).hyperopt_evals
    assert tool.in_flight("fashion_mnist", "hyperopt", tmp_path)[1] == pytest.approx((2 + 3 / 40) / evals)
    # the finished training 1 keeps its file until the record is written: the furthest training counts, once
    torch.save({"settings": {"seed": 5, "epochs": 40}, "epoch": 40},
               hyperopt / "fashion_mnist__hyperopt__seed5__00000000000000cc.1.pt")
    assert tool.in_flight("fashion_mnist", "hyperopt", tmp_path)[1] == pytest.approx((2 + 3 / 40) / evals)
    assert "not estimated (no run stored, no reference): cifar10 no_distillation" in lines[-1]


def _record(folder: Path, dataset: str, method: str, seed: int, hours: float, epochs: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{dataset}__{method}__seed{seed}__{seed:016x}.json").write_text(
        json.dumps({"summary": {"wall_time": hours * 3600}, "config": {"epochs": epochs}}))


def test_entries_without_a_run_are_estimated_from_the_reference_column(tmp_path):
    reference = tmp_path / "reference" / "authors" / "runs"
    for seed, (g, p, h) in enumerate([(0.10, 0.06, 0.15), (0.12, 0.07, 0.20), (0.11, 0.05, 0.16)]):
        _record(reference, "cifar10_reduced", "gradient", seed, g, 50)  # per epoch: median 0.11 / 50
        _record(reference, "cifar10_reduced", "proposed", seed, p, 50)  # median 0.06 / 50
        _record(reference, "cifar10_reduced", "hyperopt", seed, h, 50)  # median 0.16 / 50
    out = tmp_path / "pending"
    _record(out / "fashion_mnist" / "authors" / "runs", "fashion_mnist", "gradient", 0, 0.5, 50)
    queue = [q for q in tool.QUEUE if q[0] == "fashion_mnist" and q[1] in ("gradient", "proposed", "hyperopt", "naive")]
    lines = tool.status(queue, out, lanes=2, reference=reference)
    proposed = next(ln for ln in lines if ln.startswith("# fashion_mnist proposed"))
    # 0.5 h a 50-epoch run of the anchor x (0.06 / 0.11) per epoch x 50 epochs
    assert proposed.startswith(f"# fashion_mnist proposed: 0/10 stored, about {0.5 * 0.06 / 0.11:.2f} h a run "
                               "(estimated: fashion_mnist gradient x proposed/gradient of reference, 50 epochs)")
    # hyperopt runs 40 epochs there (the authors' log), against the reference's 50
    hyperopt = 0.5 / 50 * 0.16 / 0.11 * 40
    assert f"about {hyperopt:.2f} h a run" in next(ln for ln in lines if ln.startswith("# fashion_mnist hyperopt"))
    assert "40 epochs" in next(ln for ln in lines if ln.startswith("# fashion_mnist hyperopt"))
    measured, estimated = 9 * 0.5, 10 * (0.5 * 0.06 / 0.11 + hyperopt)
    assert lines[-1].startswith(f"# left: about {measured + estimated:.1f} lane-hours ({measured:.1f} at stored "
                                f"runs' medians, {estimated:.1f} estimated")
    assert lines[-1].endswith("not estimated (no run stored, no reference): fashion_mnist naive")



def test_a_fixed_metaparameter_entry_is_estimated_from_the_latest_stored_fixed_one(tmp_path):
    """random's cost is a plain student step's, so it is estimated from naive (the latest fixed-metaparameter
    column stored), not from gradient (about 3x a step) nor no_distillation (made sittings earlier)."""
    reference = tmp_path / "reference" / "authors" / "runs"
    for seed in range(3):
        for method, hours in (("gradient", 0.30), ("no_distillation", 0.10), ("naive", 0.11), ("random", 0.12)):
            _record(reference, "cifar10_reduced", method, seed, hours, 50)
    out = tmp_path / "pending"
    runs = out / "cifar10" / "authors" / "runs"
    for seed in range(10):
        _record(runs, "cifar10", "gradient", seed, 1.0, 100)
        _record(runs, "cifar10", "no_distillation", seed, 0.37, 100)
        _record(runs, "cifar10", "naive", seed, 0.21, 100)
    assert tool.anchors("cifar10", "random")[:2] == ["naive", "no_distillation"]
    assert tool.anchors("cifar10", "proposed")[0] == "gradient"
    hours, how = tool.estimate("cifar10", "random", out, reference)
    assert hours == pytest.approx(0.21 * 0.12 / 0.11) and how.startswith("cifar10 naive x random/naive")


def test_a_column_moved_out_of_pending_counts_as_stored(tmp_path):
    """Once a complete column moves from archive/pending/<ds>/authors/runs to archive/<ds>/authors/runs, the
    resume command (``--out-root archive/pending``) still finds its records and runs none of them again."""
    root = tmp_path / "archive"
    for seed in range(10):
        _record(root / "cifar10" / "authors" / "runs", "cifar10", "gradient", seed, 1.0, 100)
    _record(root / "pending" / "cifar10" / "authors" / "runs", "cifar10", "random", 0, 0.2, 100)
    queue = [q for q in tool.QUEUE if q[0] == "cifar10" and q[1] in ("gradient", "random")]
    assert tool.stored_seeds("cifar10", "gradient", root / "pending") == set(range(10))
    assert [(ds, m, s) for ds, m, _, s in tool.pending_runs(queue, root / "pending")] == \
        [("cifar10", "random", s) for s in range(1, 10)]
    # another out-root (not a pending/ folder) counts only its own records
    assert tool.stored_seeds("cifar10", "gradient", tmp_path / "elsewhere") == set()


def _archive_name(cfg, threads: int, kernels: str) -> str:
    from kdlib.experiments.store import config_hash, run_threads

    return f"{cfg.key()}__{config_hash(cfg, run_threads(cfg, threads), kernels)}.json"


def test_the_resume_command_finds_every_committed_record_of_its_queue():
    """The archive resumes only if the queue's commands, through the CLI's own parser and plan, still key each
    committed record as its file is named: a change to a default, a protocol field or the hash would otherwise
    re-run the whole column silently. Checked for every (dataset, method) of the queue with records in the
    repository, pending or archived."""
    from kdlib.cli import _build_parser
    from kdlib.experiments.runner import plan

    checked = 0
    for dataset, method, extra in tool.QUEUE:
        files = set()
        for folder in (REPO / "archive" / "pending", REPO / "archive"):
            files |= {p.name for p in tool.stored(dataset, method, folder)}
        if not files:
            continue
        def names(seeds):  # what the command (after `python -m kdlib`) would store
            args = _build_parser().parse_args(tool.command(dataset, method, extra, REPO / "archive", seeds)[3:])
            assert args.cpu_kernels == "avx2" and args.threads == 1
            cfgs = plan(args.dataset, args.methods, args.seed_list if seeds else args.seeds, args.profile,
                        args.device, dict(args.overrides))
            return {_archive_name(c, args.threads, args.cpu_kernels) for c in cfgs}

        column = names(None)
        assert files <= column, (dataset, method, sorted(files - column))
        for seed in tool.stored_seeds(dataset, method, REPO / "archive" / "pending"):  # a lane's one-seed command
            (one,) = names([seed])
            assert one in column and f"__seed{seed}__" in one
        checked += len(files)
    if not checked:
        pytest.skip("no committed record of the queue in this checkout")


def test_every_committed_record_is_named_by_the_key_of_its_own_config():
    """Every run record under archive/ (every column, knob and sweep folder) sits under the key that the current
    store computes from its own config, thread count and kernel pin, so the runner recognises it as stored."""
    from kdlib.experiments.config import ExperimentConfig

    files = sorted((REPO / "archive").glob("**/runs/*.json"))
    if not files:
        pytest.skip("no committed record in this checkout")
    wrong = []
    for path in files:
        rec = json.loads(path.read_text())
        prov = rec["provenance"]
        cfg = ExperimentConfig.from_dict(rec["config"])
        if path.name != _archive_name(cfg, int(prov.get("threads", 1)), prov.get("cpu_kernels", "native")):
            wrong.append(str(path.relative_to(REPO)))
    assert not wrong, wrong


def test_lanes_take_the_unstored_runs_in_queue_order_one_seed_at_a_time(tmp_path):
    """Both lanes work down one column before the next (seeds ascending, stored ones skipped), each run as the
    column's command restricted to its seed."""
    runs = tmp_path / "cifar10" / "authors" / "runs"
    runs.mkdir(parents=True)
    for seed in (0, 1, 2, 3, 4, 5, 6, 7, 9):
        (runs / f"cifar10__gradient__seed{seed}__{seed:016x}.json").write_text("{}")
    (runs / "cifar10__no_distillation__seed0__0000000000000000.json").write_text("{}")
    queue = [("cifar10", "gradient", {}), ("cifar10", "no_distillation", {})]
    todo = tool.pending_runs(queue, tmp_path)
    assert [(ds, m, s) for ds, m, _, s in todo[:3]] == [("cifar10", "gradient", 8), ("cifar10", "no_distillation", 1),
                                                        ("cifar10", "no_distillation", 2)]
    assert len(todo) == 1 + 9
    cmd = tool.command("cifar10", "gradient", {}, tmp_path, seeds=[8])
    assert cmd[cmd.index("--seed-list") + 1] == "8" and "--seeds" not in cmd
    assert tool.command("cifar10", "gradient", {}, tmp_path)[-12:] == \
        tool.command("cifar10", "gradient", {}, tmp_path, seeds=[8])[-12:]  # the same protocol flags and --out


def test_a_sitting_runs_each_missing_seed_once_on_its_lanes(tmp_path, monkeypatch, capsys):
    """main(): two lanes share one column's missing seeds; each seed's command runs once and stores its record."""
    import sys

    runs = tmp_path / "fashion_mnist" / "authors" / "runs"
    runs.mkdir(parents=True)
    for seed in range(7):
        (runs / f"fashion_mnist__naive__seed{seed}__{seed:016x}.json").write_text("{}")
    calls = []

    def fake(dataset, method, extra, out_root, seeds=None):
        calls.append(seeds)
        target = out_root / dataset / "authors" / "runs" / f"{dataset}__{method}__seed{seeds[0]}__{'f' * 16}.json"
        return [sys.executable, "-c", f"open({str(target)!r}, 'w').write('{{}}')"]

    monkeypatch.setattr(tool, "QUEUE", [("fashion_mnist", "naive", {})])
    monkeypatch.setattr(tool, "command", fake)
    assert tool.main(["--out-root", str(tmp_path), "--lanes", "2"]) == 0
    assert sorted(c[0] for c in calls) == [7, 8, 9]
    assert tool.done("fashion_mnist", "naive", tmp_path) == 10
    assert "fashion_mnist naive seed 9: exit 0" in capsys.readouterr().out


def test_every_table2_column_record_comes_from_a_clean_commit():
    """Issue 19's check: the records of Table 2's paper-protocol columns (archive/<dataset>/authors and its pending
    copy) were made from a clean commit (provenance without ``+dirty``), under the AVX2 pin, one thread each."""
    files = sorted((REPO / "archive").glob("*/authors/runs/*.json")) + \
        sorted((REPO / "archive" / "pending").glob("*/authors/runs/*.json"))
    if not files:
        pytest.skip("no committed record in this checkout")
    off = []
    for path in files:
        prov = json.loads(path.read_text())["provenance"]
        if "+dirty" in prov["commit"] or prov.get("cpu_kernels") != "avx2" or prov.get("threads") != 1:
            off.append((str(path.relative_to(REPO)), prov["commit"], prov.get("cpu_kernels"), prov.get("threads")))
    assert not off, off
