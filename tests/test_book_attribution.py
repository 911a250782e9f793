"""The 2 x 2 attribution of the gap between the archive's gradient-based columns (kdlib.analysis.archive's
factorial_table / main_effects, kdlib.book.attribution, kdlib.experiments.sweeps' ATTRIBUTION_CELLS), from tiny
records built here with known answers."""
from __future__ import annotations

import json

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from kdlib.analysis import archive as A  # noqa: E402
from kdlib.experiments import protocol as P  # noqa: E402
from kdlib.book import attribution as B  # noqa: E402
from kdlib.experiments.profiles import resolve_config  # noqa: E402
from kdlib.experiments.sweeps import ATTRIBUTION_CELLS, ATTRIBUTION_FACTORS  # noqa: E402

# (init_law, fd_virtual_lr) -> [(seed, final lambda1 in the authors' convention, final accuracy or None)]
CORNERS = {("authors", "initial"): [(0, 1.0, 0.60), (1, 0.0, 0.53)],
           ("authors", "current"): [(0, 0.5, 0.55), (1, 0.0, 0.52)],
           ("uniform", "initial"): [(0, 1.0, 0.58), (1, 0.95, 0.59)],
           ("uniform", "current"): [(0, 0.5, 0.54), (1, 0.97, None)]}
# the folder each corner is archived in
FOLDERS = {("authors", "initial"): "authors", ("uniform", "current"): "defaults",
           ("authors", "current"): "attribution", ("uniform", "initial"): "attribution"}


def _record(init_law, virtual_lr, seed, lam_final, acc, method="gradient"):
    config = dict(P.AUTHORS_PROTOCOL) if init_law == "authors" else {}
    config.update(dataset="cifar10_reduced", method=method, seed=seed, init_law=init_law, fd_virtual_lr=virtual_lr)
    history = [dict(step=0, epoch=0, test_accuracy=0.3, lambda1=0.5, temperature=2.0),
               dict(step=1, epoch=49, test_accuracy=acc, lambda1=1.0 - lam_final, temperature=3.0)]
    status = "ok" if acc is not None else "diverged"
    return dict(config=config, history=history, summary=dict(status=status, final_accuracy=acc, wall_time=1.0),
                provenance=dict(commit="abc1234", torch="2.x", threads=1, machine="test", created="2026-01-01"))


def _all_records():
    return [_record(i, v, s, lam, acc) for (i, v), runs in CORNERS.items() for s, lam, acc in runs]


@pytest.fixture
def archive_root(tmp_path):
    for (i, v), runs in CORNERS.items():
        d = tmp_path / "cifar10_reduced" / FOLDERS[(i, v)] / "runs"
        d.mkdir(parents=True, exist_ok=True)
        for s, lam, acc in runs:
            (d / f"{i}_{v}_{s}.json").write_text(json.dumps(_record(i, v, s, lam, acc)))
    nd = tmp_path / "cifar10_reduced" / "authors" / "runs" / "nd.json"
    nd.write_text(json.dumps(_record("authors", "initial", 0, 0.0, 0.50, method="no_distillation")))
    return tmp_path


def test_factorial_table_counts_branches_and_leaves_diverged_runs_out_of_the_mean():
    recs = _all_records() + [_record("authors", "initial", 0, 1.0, 0.9, method="naive"),  # another method
                             _record("authors", "halfway", 3, 1.0, 0.9)]  # a level outside the design
    t = A.factorial_table(recs, ATTRIBUTION_FACTORS).set_index(list(ATTRIBUTION_FACTORS))
    assert list(t.index) == [("authors", "initial"), ("authors", "current"), ("uniform", "initial"),
                             ("uniform", "current")]
    assert t.runs.tolist() == [2, 2, 2, 2]
    assert t.distillation.tolist() == [1, 0, 2, 0] and t["pure CE"].tolist() == [1, 1, 0, 0]
    assert t.between.tolist() == [0, 1, 0, 1] and t.diverged.tolist() == [0, 0, 0, 1]
    assert t["mean final accuracy"].tolist() == pytest.approx([0.565, 0.535, 0.585, 0.54])
    assert t.loc[("authors", "initial"), "std final accuracy"] == pytest.approx(0.035)
    assert t.loc[("uniform", "current"), "std final accuracy"] == 0.0  # one finished run
    assert t.loc[("uniform", "initial"), "mean final lambda1_authors"] == pytest.approx(0.975)


def test_main_effects_of_a_complete_design_and_nan_while_a_corner_is_missing():
    t = A.factorial_table(_all_records(), ATTRIBUTION_FACTORS)
    eff = A.main_effects(t, ATTRIBUTION_FACTORS)
    assert eff["fd_virtual_lr"] == pytest.approx(((0.565 + 0.585) - (0.535 + 0.54)) / 2)
    assert eff["init_law"] == pytest.approx(((0.565 + 0.535) - (0.585 + 0.54)) / 2)
    dist = A.main_effects(t.assign(distillation=t.distillation.astype(float)), ATTRIBUTION_FACTORS, "distillation")
    assert dist == {"init_law": pytest.approx(-0.5), "fd_virtual_lr": pytest.approx(1.5)}
    part = A.factorial_table([r for r in _all_records() if r["config"]["init_law"] == "authors"], ATTRIBUTION_FACTORS)
    assert part.runs.tolist() == [2, 2, 0, 0]
    assert all(np.isnan(v) for v in A.main_effects(part, ATTRIBUTION_FACTORS).values())
    with pytest.raises(ValueError, match="two records of gradient seed 0"):
        A.factorial_table(_all_records() + [_record("authors", "current", 0, 0.2, 0.5)], ATTRIBUTION_FACTORS)


def test_the_switched_cells_are_the_archive_columns_with_one_field_changed():
    """Each cell of the sweep resolves to the config of one archive column with exactly one field switched, and
    the four corners of the design are four distinct records keys."""
    paper = resolve_config("cifar10_reduced", "gradient", "paper", 0).to_dict()
    authors = resolve_config("cifar10_reduced", "gradient", "paper", 0, **P.AUTHORS_PROTOCOL).to_dict()
    cells = {name: resolve_config("cifar10_reduced", "gradient", "paper", 0, **o).to_dict()
             for name, o in ATTRIBUTION_CELLS.items()}
    for cell in cells.values():
        diff_a = {k for k in authors if authors[k] != cell[k]}
        diff_d = {k for k in paper if paper[k] != cell[k]}
        assert {frozenset(diff_a), frozenset(diff_d)} & {frozenset({"fd_virtual_lr"})}
        levels = (cell["init_law"], cell["fd_virtual_lr"])
        assert levels in {("authors", "current"), ("uniform", "initial")}
    assert (authors["init_law"], authors["fd_virtual_lr"]) == tuple(v[0] for v in ATTRIBUTION_FACTORS.values())
    assert (paper["init_law"], paper["fd_virtual_lr"]) == tuple(v[1] for v in ATTRIBUTION_FACTORS.values())


def test_verdict_states_the_computed_effects_and_the_larger_one():
    t = A.factorial_table(_all_records(), ATTRIBUTION_FACTORS)
    text = B.attribution_verdict(t, reference=0.50)
    assert "From the authors' draws: with the virtual step at the initial lr, 1 of 2 runs end on the distillation " \
           "branch (mean final accuracy 0.5650, +0.0650 over no distillation)" in text
    assert "changes the mean final accuracy by +0.0375 and the number of runs on the distillation branch by +1.5" \
        in text
    assert "change them by -0.0125 and -0.5" in text
    assert "The larger effect on the final accuracy is that of `fd_virtual_lr` (0.0375 against 0.0125 for `init_law`)." \
        in text
    part = A.factorial_table([r for r in _all_records() if r["config"]["fd_virtual_lr"] == "initial"],
                             ATTRIBUTION_FACTORS)
    text = B.attribution_verdict(part)
    assert "at the current lr, not run" in text and "not complete (2 corner(s) without records)" in text
    assert "Main effects" not in text


def test_show_attribution_reads_the_four_corners_from_their_folders(archive_root, monkeypatch):
    shown = []
    monkeypatch.setattr(B, "show_markdown", shown.append)
    monkeypatch.setattr(B, "show_table", lambda df, **kw: shown.append(df))
    monkeypatch.setattr(B.authors_logs, "find_logs_dir", lambda *a, **k: None)
    t = B.show_attribution(root=archive_root)
    assert t.runs.tolist() == [2, 2, 2, 2]
    assert shown[0].startswith("4 records of the two switched corners")
    table = shown[1]
    assert table["records in"].tolist() == ["authors/", "attribution/", "attribution/", "defaults/"]
    assert table["final accuracy, mean ± std"].tolist()[0] == "0.5650 ± 0.0350"
    assert "+0.0650 over no distillation" in shown[2]  # the archived no-distillation run's 0.50


def test_show_attribution_sets_the_authors_starts_beside_their_logs_run_by_run(archive_root, tmp_path, monkeypatch):
    logs = tmp_path / "logs"
    logs.mkdir()
    with open(logs / "exp33_opt.jsonl", "w") as fh:  # run 0 ends distilling, run 1 in pure CE
        for t0, lam, acc in [(8.06, 1.0, 0.607), (0.36, 0.0, 0.535)]:
            res = [dict(epoch=0, accuracy=0.3, lambda1=0.5, temp=t0), dict(epoch=49, accuracy=acc, lambda1=lam, temp=t0)]
            fh.write(json.dumps({"results": res, "version": "33"}) + "\n")
    shown = []
    monkeypatch.setattr(B, "show_markdown", shown.append)
    monkeypatch.setattr(B, "show_table", lambda df, **kw: shown.append(df))
    monkeypatch.setattr(B.authors_logs, "find_logs_dir", lambda *a, **k: logs)
    monkeypatch.setattr(B.plt, "show", lambda: None)
    B.show_attribution(root=archive_root)
    runs = shown[-1].set_index("run")
    assert runs["branch (authors' logs)"].tolist() == ["distillation", "pure CE"]
    assert runs["branch, ours, virtual step at the initial lr"].tolist() == ["distillation", "pure CE"]
    assert runs["branch, ours, virtual step at the current lr"].tolist() == ["between", "pure CE"]
    assert runs["final accuracy, ours, virtual step at the current lr"].tolist() == [0.55, 0.52]
    assert runs["T after epoch 0 (authors)"].tolist() == [8.06, 0.36]
