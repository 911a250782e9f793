"""tools/archive_table2.py --dry-run: what is stored, what a sitting left in flight (its checkpoints), and the
lane-hours left at the stored runs' median wall time."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("archive_table2", REPO / "tools" / "archive_table2.py")
tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tool)


def test_dry_run_reports_stored_in_flight_and_hours_left(tmp_path, capsys):
    authors = tmp_path / "cifar10" / "authors"
    (authors / "runs").mkdir(parents=True)
    for seed, wall in ((0, 3600.0), (1, 5400.0), (4, 4000.0)):
        (authors / "runs" / f"cifar10__gradient__seed{seed}__{seed:016x}.json").write_text(
            json.dumps({"summary": {"wall_time": wall}}))
    (authors / ".partial").mkdir()
    torch.save({"settings": {"seed": 2, "epochs": 100}, "epoch": 37},
               authors / ".partial" / "cifar10__gradient__seed2__00000000000000aa.0.pt")
    (authors / ".partial" / "cifar10__gradient__seed3__00000000000000bb.0.pt").write_bytes(b"torn")
    hyperopt = tmp_path / "fashion_mnist" / "authors" / ".partial"
    hyperopt.mkdir(parents=True)
    torch.save({"settings": {"seed": 5, "epochs": 40}, "epoch": 3},
               hyperopt / "fashion_mnist__hyperopt__seed5__00000000000000cc.2.pt")  # its third training

    assert tool.main(["--dry-run", "--out-root", str(tmp_path)]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("#")]
    grad = next(ln for ln in lines if ln.startswith("# cifar10 gradient"))
    assert grad.startswith("# cifar10 gradient: 3/10 stored, 1.11 h a run (median of 3); in flight: seed 2: "
                           "epoch 37/100, cifar10__gradient__seed3__00000000000000bb.0.pt: unreadable")
    hyper = next(ln for ln in lines if ln.startswith("# fashion_mnist hyperopt"))
    assert hyper == "# fashion_mnist hyperopt: 0/10 stored; in flight: seed 5: epoch 3/40 of training 2"
    # 7 runs left at the median 4000 s: 7.8 lane-hours, 3.9 h on the default 2 lanes
    assert lines[-1].startswith("# left: about 7.8 lane-hours for the entries with a stored run (3.9 h on 2 lanes")
    assert "no run stored yet: cifar10 no_distillation" in lines[-1]

