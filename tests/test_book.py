"""The book: every notebook runs under nbval at the smoke profile, and Table 2 equals the results it came from.

The smoke *book build* (jupyter-book -W) is run by the Makefile (``make test``), not here.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kdlib import book as report

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.md"))


# ------------------------------------------------------------------------------------------ (a) nbval at smoke

def test_notebooks_exist_and_are_jupytext_myst():
    import jupytext

    stems = [p.stem for p in NOTEBOOKS]
    assert stems == ["01_problem_statement", "02_lemma1", "03_theorem1", "04_synthetic", "05_fashion_mnist",
                     "06_cifar10_reduced", "07_cifar10", "08_summary", "09_reproduction_notes", "10_own_models"]
    toc = (REPO / "book" / "_toc.yml").read_text()
    for p in NOTEBOOKS:
        assert f"file: {p.stem}" in toc, f"{p.stem} is missing from book/_toc.yml"
        nb = jupytext.read(p)
        assert nb.metadata["kernelspec"]["name"] == "python3"
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert "parameters" in code[0].metadata.get("tags", []), f"{p.stem}: first code cell must be tagged parameters"
        for name in ("profile", "device", "seeds"):
            assert f"{name} =" in code[0].source, f"{p.stem}: the parameters cell must set {name}"
        assert 'os.environ.get("KDLIB_PROFILE", "quick")' in code[0].source
        assert any("PageBanner" in c.source for c in code), f"{p.stem} shows no banner"


@pytest.mark.skipif(os.environ.get("KDLIB_SKIP_NBVAL") == "1", reason="KDLIB_SKIP_NBVAL=1")
def test_notebooks_run_under_nbval_at_smoke(tmp_path):
    import jupytext

    for p in NOTEBOOKS:
        nb = jupytext.read(p)
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        jupytext.write(nb, tmp_path / f"{p.stem}.ipynb", fmt="ipynb")
    env = dict(os.environ, KDLIB_PROFILE="smoke", OMP_NUM_THREADS="1",
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("MPLBACKEND", None)
    if not env.get("KDLIB_DATA") and (REPO.parent / "shared" / "data").is_dir():
        env["KDLIB_DATA"] = str(REPO.parent / "shared" / "data")
    proc = subprocess.run([sys.executable, "-m", "pytest", "--nbval-lax", "-q", "-p", "no:cacheprovider",
                           "--nbval-current-env", "--rootdir", str(tmp_path), str(tmp_path)],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]


# ------------------------------------------------------------------------------------------ (b) Table 2

def _fabricated_results(path: Path) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for ds in report.DATASETS:
        for m in report.METHODS:
            if (ds, m) == ("cifar10", "hyperopt"):
                continue  # a cell with no runs must show a dash
            for seed in range(3):
                evals = 0
                for step in (0, 10, 20):
                    evals += 10 if m in ("gradient", "proposed") else 0
                    rows.append(dict(dataset=ds, method=m, seed=seed, step=step, epoch=step // 10,
                                     test_accuracy=float(rng.uniform(0.4, 0.9)), lambda1=0.5, temperature=1.0,
                                     hypergrad_evals=evals // (2 if m == "proposed" else 1),
                                     full_trainings=6 if m == "hyperopt" else 1, wall_time=step * 0.1,
                                     phase="fixed"))
    # rows written out of order must not change the result
    df = pd.DataFrame(rows).sample(frac=1.0, random_state=1)
    df.to_csv(path, index=False)
    return pd.read_csv(path)


def test_table2_has_every_method_and_dataset(tmp_path):
    results = _fabricated_results(tmp_path / "results.csv")
    t = report.table2(results)
    assert list(t.index) == list(report.METHODS)
    assert list(t.columns) == list(report.DATASETS)
    assert t.loc["hyperopt", "cifar10"] == "—"


def test_table2_numbers_equal_the_results_file(tmp_path):
    csv = tmp_path / "results.csv"
    results = _fabricated_results(csv)
    num = report.table2_numeric(results)
    # independent computation straight from the CSV: the row with the largest step of each run
    raw = pd.read_csv(csv)
    idx = raw.groupby(["dataset", "method", "seed"])["step"].idxmax()
    final = raw.loc[idx]
    expected = final.groupby(["method", "dataset"])["test_accuracy"].agg(
        mean="mean", max="max", std=lambda s: float(np.std(s.to_numpy(), ddof=0)), n="count")
    for _, r in num.iterrows():
        key = (r.method, r.dataset)
        if key not in expected.index:
            assert r.n == 0 and np.isnan(r["mean"])
            continue
        e = expected.loc[key]
        assert r["mean"] == pytest.approx(e["mean"])
        assert r["max"] == pytest.approx(e["max"])
        assert r["std"] == pytest.approx(e["std"])
        assert r.n == e["n"]
    t = report.table2(results, digits=4)
    e = expected.loc[("gradient", "synthetic")]
    assert t.loc["gradient", "synthetic"] == f"{e['mean']:.4f} ({e['max']:.4f}) ± {e['std']:.4f}"


def test_cost_table(tmp_path):
    results = _fabricated_results(tmp_path / "results.csv")
    c = report.cost_table(results)
    syn = c[c.dataset == "synthetic"].set_index("method")
    assert list(syn.index) == list(report.METHODS)
    assert syn.loc["gradient", "hypergrad_evals"] == 30 and syn.loc["proposed", "hypergrad_evals"] == 15
    assert syn.loc["proposed", "saving_vs_gradient_evals"] == pytest.approx(0.5)
    assert syn.loc["hyperopt", "full_trainings"] == 6
    assert np.isnan(syn.loc["gradient", "saving_vs_gradient_evals"])


def test_banner_fields():
    text = report.banner("smoke", "cpu", [0, 1], "60 iterations", "synthetic (paper variant)", 12.3)
    for part in ("smoke", "cpu", "60 iterations", "synthetic (paper variant)", "12.3 s", "kdlib"):
        assert part in text
    assert "commit" in text
    assert report.git_commit("/") in ("unknown",) or report.git_commit("/")
