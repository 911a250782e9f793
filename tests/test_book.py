"""The book: every notebook runs under nbval at the smoke profile, ``jupyter-book build book/`` finds every
page (source or executed copy) or fails naming it, and Table 2 equals the results it came from.

The smoke build of the whole book (jupyter-book -W) is run by the Makefile (``make test``), not here; the build
mechanism is tested on a tiny book with the real ``book/_config.yml`` and ``book/_ext``.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from kdlib import book as report

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.md"))
BOOK = REPO / "book"


def _load_pages_extension():
    spec = importlib.util.spec_from_file_location("kdbook_pages", BOOK / "_ext" / "kdbook_pages.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["kdbook_pages"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


kdbook_pages = _load_pages_extension()


# ------------------------------------------------------------------------------------------ (a) nbval at smoke

def test_notebooks_exist_and_are_jupytext_myst():
    import jupytext

    stems = [p.stem for p in NOTEBOOKS]
    assert stems == ["01_problem_statement", "02_lemma1", "03_theorem1", "04_synthetic", "05_fashion_mnist",
                     "06_cifar10_reduced", "07_cifar10", "08_summary", "09_reproduction_notes", "10_own_models",
                     "11_beyond"]
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
        # a page builds its banner itself (PageBanner) or through kdlib.book.summary_page.SummaryPage, which does
        assert any("PageBanner" in c.source or "SummaryPage(" in c.source for c in code), f"{p.stem} shows no banner"
    from kdlib.book.page import PageBanner
    from kdlib.book.summary_page import SummaryPage

    assert isinstance(SummaryPage("smoke").banner, PageBanner)


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


# ------------------------------------------------------------------------------------------ (b) the build

def test_toc_resolves_to_the_notebook_sources():
    """Every toc page is book/<page>.md, a relative link to notebooks/<page>.md (the root: book/intro.md)."""
    docs = kdbook_pages.toc_docnames(BOOK / "_toc.yml")
    assert docs[0] == "intro" and sorted(docs[1:]) == [p.stem for p in NOTEBOOKS]
    # in numbered order, except the page against 2023-24 methods, which follows the summary
    assert [d for d in docs[1:] if d != "11_beyond"] == [p.stem for p in NOTEBOOKS if p.stem != "11_beyond"]
    assert docs.index("11_beyond") == docs.index("08_summary") + 1
    pages = {p.docname: p for p in kdbook_pages.resolve_pages(BOOK, docs, use_executed=False)}
    assert pages["intro"].path == BOOK / "intro.md" and not pages["intro"].path.is_symlink()
    for nb in NOTEBOOKS:
        page = pages[nb.stem]
        assert not page.executed and page.path == BOOK / f"{nb.stem}.md"
        assert page.path.is_symlink() and os.readlink(page.path) == f"../notebooks/{nb.stem}.md"
        assert page.path.resolve() == nb.resolve()


def test_top_level_config_is_the_book_config():
    """The companion's layout has `_config.yml` at the repository's top level: one file, reachable from both places."""
    top = REPO / "_config.yml"
    assert top.is_symlink() and os.readlink(top) == "book/_config.yml"
    assert top.resolve() == (BOOK / "_config.yml").resolve()


def test_page_titles_read_as_text():
    """A page's title is also the browser tab's and the sidebar's, where math is not rendered: no LaTeX in it."""
    for p in NOTEBOOKS:
        title = next(line for line in p.read_text().splitlines() if line.startswith("# "))
        assert "$" not in title and "\\" not in title, (p.name, title)


def test_config_profile_is_the_notebooks_default():
    """`jupyter-book build book/` executes at kdbook_profile; the notebooks fall back to the same profile."""
    cfg = yaml.safe_load((BOOK / "_config.yml").read_text())
    profile = cfg["sphinx"]["config"]["kdbook_profile"]
    assert profile == "quick"
    for p in NOTEBOOKS:
        assert f'os.environ.get("KDLIB_PROFILE", "{profile}")' in p.read_text(), p.stem
    assert cfg["execute"]["execute_notebooks"] == "cache" and cfg["execute"]["raise_on_error"] is True
    assert cfg["sphinx"]["config"]["nb_render_markdown_format"] == "myst"


def _write_executed_copy(path: Path, *, error: bool = False, executed: bool = True, profile: str = "smoke"):
    cell = {"cell_type": "code", "metadata": {}, "source": "print(1)", "execution_count": 1 if executed else None,
            "outputs": [{"output_type": "stream", "name": "stdout", "text": "1\n"}] if executed else []}
    if error:
        cell["outputs"] = [{"output_type": "error", "ename": "ValueError", "evalue": "boom", "traceback": []}]
    nb = {"cells": [cell], "metadata": {"papermill": {"parameters": {"profile": profile}, "exception": None}},
          "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(nb))


def test_executed_copy_takes_precedence_over_the_source(tmp_path):
    (tmp_path / "notebooks").mkdir()
    src = tmp_path / "book"
    src.mkdir()
    (tmp_path / "notebooks" / "01_a.md").write_text("# a\n")
    (tmp_path / "notebooks" / "02_b.md").write_text("# b\n")
    (src / "01_a.md").symlink_to("../notebooks/01_a.md")
    (src / "02_b.md").symlink_to("../notebooks/02_b.md")
    _write_executed_copy(src / "02_b.ipynb")
    a, b = kdbook_pages.resolve_pages(src, ["01_a", "02_b"])
    assert (a.path, a.executed, a.shadowed) == (src / "01_a.md", False, None)
    assert (b.path, b.executed, b.shadowed) == (src / "02_b.ipynb", True, src / "02_b.md")
    assert kdbook_pages.executed_copy_problem(b.path) is None
    assert kdbook_pages.executed_profile(b.path) == "smoke"
    # CI's smoke book ignores the copies
    b_src = kdbook_pages.resolve_pages(src, ["02_b"], use_executed=False)[0]
    assert (b_src.path, b_src.executed, b_src.shadowed) == (src / "02_b.md", False, src / "02_b.ipynb")
    # a copy holding an error, or never executed, is refused with the reason
    _write_executed_copy(src / "02_b.ipynb", error=True)
    assert "ValueError: boom" in kdbook_pages.executed_copy_problem(src / "02_b.ipynb")
    _write_executed_copy(src / "02_b.ipynb", executed=False)
    assert "never executed" in kdbook_pages.executed_copy_problem(src / "02_b.ipynb")
    # a page with neither, or with a dangling link, is named
    (tmp_path / "notebooks" / "01_a.md").unlink()
    with pytest.raises(kdbook_pages.PageError, match=r"'01_a'.*broken link.*'03_c'"):
        kdbook_pages.resolve_pages(src, ["01_a", "02_b", "03_c"])


TINY_PAGE = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
    format_version: 0.13
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---

# A page about $\\lambda_1$

```{code-cell} ipython3
:tags: [parameters]

import os

profile = os.environ.get("KDLIB_PROFILE", "quick")
```

```{code-cell} ipython3
from IPython.display import Markdown, display
import matplotlib.pyplot as plt

display(Markdown(f"banner: profile **{profile}**, $\\lambda_1 = 0.5$"))
fig, ax = plt.subplots(figsize=(2, 2))
ax.plot([0, 1], [0, 1])
plt.show()
```
"""


def _tiny_book(root: Path, pages: list[str]) -> Path:
    """A book with the real _config.yml and extension, an intro and one notebook page per name (linked)."""
    book = root / "book"
    (root / "notebooks").mkdir(parents=True)
    book.mkdir()
    shutil.copy(BOOK / "_config.yml", book / "_config.yml")
    shutil.copytree(BOOK / "_ext", book / "_ext", ignore=shutil.ignore_patterns("__pycache__"))
    (book / "intro.md").write_text("# Tiny book\n")
    (book / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n"
                                   + "".join(f"  - file: {p}\n" for p in pages))
    for p in pages:
        (root / "notebooks" / f"{p}.md").write_text(TINY_PAGE)
        (book / f"{p}.md").symlink_to(f"../notebooks/{p}.md")
    return book


def _jupyter_book(root: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "jupyter-book"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "jupyter_book.cli.main"]
    full_env = {k: v for k, v in os.environ.items() if k not in ("KDLIB_PROFILE", "KDBOOK_IGNORE_EXECUTED")}
    full_env.update(env, OMP_NUM_THREADS="1", PYDEVD_DISABLE_FILE_VALIDATION="1", MPLBACKEND="agg")
    return subprocess.run(cmd + ["build", "book/", *args], cwd=str(root), env=full_env, capture_output=True,
                          text=True, timeout=600)


def _banner_profile(html: Path) -> str:
    found = re.findall(r"banner: profile <strong>(\w+)</strong>", html.read_text())
    assert len(found) == 1, html.read_text()[-3000:]
    return found[0]


def test_tiny_book_executes_sources_caches_and_renders_executed_copies(tmp_path):
    import jupytext
    import papermill as pm

    book = _tiny_book(tmp_path, ["01_page"])
    proc = _jupyter_book(tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    html = book / "_build" / "html" / "01_page.html"
    assert _banner_profile(html) == "quick"                     # executed by Jupyter Book at the default
    text = html.read_text()
    assert 'os.environ.get("KDLIB_PROFILE"' not in text and "KDLIB_PROFILE" not in text  # parameters cell removed
    assert r"\(\lambda_1 = 0.5\)" in text                        # generated Markdown rendered as MyST math
    assert re.search(r'<img[^>]+src="_images/[^"]+\.png"', text)   # the figure
    assert "Executed notebook" in proc.stdout + proc.stderr

    again = _jupyter_book(tmp_path)                              # nothing changed: nothing read, nothing executed
    assert again.returncode == 0 and "Executing notebook" not in again.stdout + again.stderr
    assert "0 added, 0 changed, 0 removed" in again.stdout

    # book/README.md's papermill route writes the executed copy; the next build renders it as it is
    nb = jupytext.read(tmp_path / "notebooks" / "01_page.md")
    jupytext.write(nb, tmp_path / "notebooks" / "01_page.ipynb", fmt="ipynb")
    pm.execute_notebook(str(tmp_path / "notebooks" / "01_page.ipynb"), str(book / "01_page.ipynb"),
                        parameters={"profile": "smoke"}, kernel_name="python3", progress_bar=False)
    proc = _jupyter_book(tmp_path, "-W", "-n", "--keep-going")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "Executing notebook" not in proc.stdout + proc.stderr
    assert _banner_profile(html) == "smoke"
    assert "injected-parameters" not in html.read_text() and "KDLIB_PROFILE" not in html.read_text()

    # a source edited after its copy was made: the copy is still what is rendered, with a warning
    later = (book / "01_page.ipynb").stat().st_mtime + 60
    os.utime(tmp_path / "notebooks" / "01_page.md", (later, later))
    proc = _jupyter_book(tmp_path)
    assert proc.returncode == 0 and "is older than its source" in proc.stdout + proc.stderr
    assert _banner_profile(html) == "smoke"
    os.utime(book / "01_page.ipynb", (later + 1, later + 1))

    # CI's smoke book ignores the copy and executes the source at its profile, in its own cache
    proc = _jupyter_book(tmp_path, "-W", KDLIB_PROFILE="smoke", KDBOOK_IGNORE_EXECUTED="1")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert _banner_profile(html) == "smoke" and "Executed notebook" in proc.stdout + proc.stderr
    assert (book / "_build" / ".jupyter_cache" / "smoke").is_dir()


def test_tiny_book_fails_naming_the_page_it_cannot_produce(tmp_path):
    book = _tiny_book(tmp_path, ["01_page", "02_other"])
    (tmp_path / "notebooks" / "02_other.md").unlink()            # a toc entry whose source is gone
    proc = _jupyter_book(tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "'02_other'" in out and "build succeeded" not in out
    assert "Executing notebook" not in out                        # refused before anything executes

    (book / "02_other.md").unlink()
    (book / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n  - file: 01_page\n")
    page = tmp_path / "notebooks" / "01_page.md"
    page.write_text(TINY_PAGE + '\n```{code-cell} ipython3\nraise ValueError("this page fails")\n```\n')
    proc = _jupyter_book(tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "01_page.md" in out and "this page fails" in out
    assert "build succeeded" not in out

    page.write_text(TINY_PAGE)
    _write_executed_copy(book / "01_page.ipynb", error=True)     # an executed copy holding an error
    proc = _jupyter_book(tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "'01_page'" in out and "ValueError: boom" in out


# ------------------------------------------------------------------------------------------ (c) Table 2

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


def test_banner_fields(tmp_path):
    text = report.banner("smoke", "cpu", [0, 1], "60 iterations", "synthetic (paper variant)", 12.3)
    for part in ("smoke", "cpu", "60 iterations", "synthetic (paper variant)", "12.3 s", "kdlib"):
        assert part in text
    head = report.head_commit()  # this checkout's short HEAD ("unknown" only where the tree has no git)
    assert re.fullmatch(r"[0-9a-f]{7,40}", head) or (head == "unknown" and not (REPO / ".git").exists())
    assert f"(commit `{head}`)" in text
    assert report.head_commit(tmp_path) == "unknown"  # a folder outside any repository
