"""Where each page of the book comes from, and what a build must refuse (a local Sphinx extension).

Loaded by Jupyter Book from ``_config.yml`` (``sphinx: local_extensions: {kdbook_pages: book/_ext}``).

* **Sources.** ``book/NN_name.md`` are relative symlinks (committed in git) to ``notebooks/NN_name.md``, the
  Jupytext notebooks users edit. Jupyter Book executes them itself (``execute_notebooks: cache``).
* **Executed copies take precedence.** When ``book/NN_name.ipynb`` exists (written by papermill, or by
  ``tools/build_book.py``, which uses papermill), that copy is rendered as it is and ``book/NN_name.md`` is
  added to ``exclude_patterns``, so Sphinx sees one file per document. A copy is refused when it holds an
  error or was never executed; a copy older than its source gives a warning.
  ``KDBOOK_IGNORE_EXECUTED=1`` builds every page from its source instead (``make test`` does, so its smoke
  book tests the notebooks, not copies left by an earlier ``make book``).
* **Every page of ``_toc.yml`` or no book.** A toc entry with neither a source nor an executed copy stops the
  build before anything executes, naming the page; after an HTML build every toc page must have its HTML file.
* **Profile.** ``KDLIB_PROFILE`` if set, else ``kdbook_profile`` from ``_config.yml``; it is exported so the
  kernels Jupyter Book starts see it (the notebooks' ``parameters`` cell reads it), and each profile gets its own
  jupyter-cache (``<build>/.jupyter_cache/<profile>``): outputs of one profile are never served for another.
* **Rendering.** The ``parameters`` and papermill's ``injected-parameters`` cells are removed from the pages,
  and MathJax is loaded on every page (titles with math appear in the sidebar of every page).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.errors import ExtensionError
from sphinx.util import logging
from sphinx_external_toc.parsing import parse_toc_yaml

logger = logging.getLogger(__name__)

PROFILE_ENV = "KDLIB_PROFILE"
IGNORE_EXECUTED_ENV = "KDBOOK_IGNORE_EXECUTED"  # "1": build every page from its source (CI's smoke book)
EXECUTED_SUFFIX = ".ipynb"
SOURCE_SUFFIXES = (".md", ".rst")
HIDDEN_TAGS = frozenset({"parameters", "injected-parameters"})


class PageError(ExtensionError):
    """A page of the toc cannot be produced (named in the message)."""


@dataclass(frozen=True)
class PageSource:
    """The file Sphinx reads for one toc page."""

    docname: str
    path: Path                 # the file read: the executed copy or the source
    executed: bool             # True: an executed copy, rendered as it is (never re-executed)
    shadowed: Path | None      # the other file of the same page, excluded from the build


def toc_docnames(toc_path: str | Path) -> list[str]:
    """Every document named in ``_toc.yml``, root first, in toc order."""
    return list(parse_toc_yaml(toc_path))


def resolve_pages(srcdir: str | Path, docnames: Iterable[str], *, use_executed: bool = True) -> list[PageSource]:
    """Pick the file of each page: ``<doc>.ipynb`` (an executed copy) over ``<doc>.md`` / ``<doc>.rst``
    (with ``use_executed=False``, the source always, the copy being shadowed).

    Raises :class:`PageError` naming every page that has neither (a dangling symlink counts as missing).
    """
    srcdir = Path(srcdir)
    pages, missing = [], []
    for doc in docnames:
        executed = srcdir / f"{doc}{EXECUTED_SUFFIX}"
        sources = [srcdir / f"{doc}{s}" for s in SOURCE_SUFFIXES if (srcdir / f"{doc}{s}").exists()]
        if executed.exists() and not use_executed and sources:
            pages.append(PageSource(doc, sources[0], False, executed))
        elif executed.exists():
            pages.append(PageSource(doc, executed, True, sources[0] if sources else None))
        elif sources:
            pages.append(PageSource(doc, sources[0], False, None))
        else:
            links = [srcdir / f"{doc}{s}" for s in SOURCE_SUFFIXES if (srcdir / f"{doc}{s}").is_symlink()]
            why = "; ".join(f"{p.name} is a broken link to {os.readlink(p)}" for p in links)
            missing.append(f"{doc!r} (expected {srcdir.name}/{doc}.md, a link to ../notebooks/{doc}.md, or an "
                           f"executed copy {srcdir.name}/{doc}.ipynb" + (f"; {why}" if why else "") + ")")
    if missing:
        raise PageError("pages of the table of contents with no source, so the book cannot be built: "
                        + ", ".join(missing))
    return pages


def executed_copy_problem(path: str | Path) -> str | None:
    """Why an executed copy cannot be rendered as the page (an error inside, or never executed), or None."""
    try:
        nb = json.loads(Path(path).read_text(encoding="utf8"))
        cells = nb["cells"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"not a readable notebook ({type(exc).__name__}: {exc})"
    if (nb.get("metadata", {}).get("papermill") or {}).get("exception"):
        return "papermill recorded an exception while executing it"
    code = [c for c in cells if c.get("cell_type") == "code"]
    for i, cell in enumerate(code):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                return f"code cell {i} raised {out.get('ename')}: {out.get('evalue')}"
    if code and all(c.get("execution_count") is None and not c.get("outputs") for c in code):
        return "it was never executed (no code cell has run): execute it with papermill"
    return None


def executed_profile(path: str | Path) -> str | None:
    """The ``profile`` papermill passed to an executed copy, if it recorded one."""
    try:
        nb = json.loads(Path(path).read_text(encoding="utf8"))
    except (OSError, ValueError):
        return None
    params = (nb.get("metadata", {}).get("papermill") or {}).get("parameters") or {}
    return params.get("profile")


def _toc_path(app: Sphinx, config: Config) -> Path:
    toc = Path(config.external_toc_path)
    return toc if toc.is_absolute() else Path(app.srcdir) / toc


def choose_sources(app: Sphinx, config: Config) -> None:
    """config-inited: profile, per-profile cache, and one file per toc page (executed copy over source)."""
    profile = os.environ.get(PROFILE_ENV) or config.kdbook_profile
    config.kdbook_profile = profile
    os.environ[PROFILE_ENV] = profile  # the kernels started by Jupyter Book inherit it
    if os.environ.pop("MPLBACKEND", None):  # a non-inline backend would leave the pages without their figures
        logger.info("[kdbook] MPLBACKEND unset for the kernels: figures go into the pages (inline backend)")
    if not config.nb_execution_cache_path:
        config.nb_execution_cache_path = str((Path(app.outdir).parent / ".jupyter_cache" / profile).resolve())
    logger.info(f"[kdbook] profile {profile!r} for the pages Jupyter Book executes "
                f"(jupyter-cache {config.nb_execution_cache_path})")

    srcdir = Path(app.srcdir)
    use_executed = os.environ.get(IGNORE_EXECUTED_ENV, "") not in ("1", "true", "yes")
    pages = resolve_pages(srcdir, toc_docnames(_toc_path(app, config)), use_executed=use_executed)
    excluded, bad = [], []
    for page in pages:
        if not page.executed:
            if page.shadowed is not None:
                logger.info(f"[kdbook] {page.docname}: {IGNORE_EXECUTED_ENV} is set, ignoring the executed copy "
                            f"{srcdir.name}/{page.shadowed.name}")
                excluded.append(page.shadowed.relative_to(srcdir).as_posix())
            continue
        problem = executed_copy_problem(page.path)
        if problem:
            bad.append(f"{page.docname!r} ({srcdir.name}/{page.path.name}: {problem}; rerun it or delete it to "
                       f"build the page from its source)")
            continue
        ran_at = executed_profile(page.path)
        logger.info(f"[kdbook] {page.docname}: rendering the executed copy {srcdir.name}/{page.path.name}"
                    + (f" (papermill, profile {ran_at!r})" if ran_at else ""))
        if page.shadowed is not None:
            excluded.append(page.shadowed.relative_to(srcdir).as_posix())
            if page.path.stat().st_mtime < page.shadowed.resolve().stat().st_mtime:
                logger.warning(f"[kdbook] {page.docname}: the executed copy {srcdir.name}/{page.path.name} is older "
                               f"than its source {os.path.realpath(page.shadowed)}; the page shows the copy. Rerun "
                               f"papermill or delete the copy.")
    if bad:
        raise PageError("executed copies that cannot be rendered: " + ", ".join(bad))
    config.exclude_patterns = [*config.exclude_patterns, *sorted(set(excluded) - set(config.exclude_patterns))]


def remove_parameter_cells(app: Sphinx, doctree: Any) -> None:
    """doctree-read: drop the ``parameters`` / ``injected-parameters`` code cells from the rendered page."""
    for node in list(doctree.findall(nodes.container)):
        if node.get("nb_element") != "cell_code":
            continue
        tags = (node.get("cell_metadata") or {}).get("tags") or []
        if HIDDEN_TAGS.intersection(tags):
            node.parent.remove(node)


def check_every_page_built(app: Sphinx, exc: Exception | None) -> None:
    """build-finished: every toc page has its HTML file, or the build fails naming the missing ones."""
    if exc is not None or app.builder.format != "html" or not hasattr(app.builder, "get_outfilename"):
        return
    docs = toc_docnames(_toc_path(app, app.config))
    missing = [d for d in docs if not Path(app.builder.get_outfilename(d)).exists()]
    if missing:
        raise PageError(f"pages of the table of contents missing from {app.outdir}: {', '.join(missing)}")


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_config_value("kdbook_profile", "quick", "env", [str])
    app.connect("config-inited", choose_sources, priority=900)
    app.connect("doctree-read", remove_parameter_cells)
    app.connect("build-finished", check_every_page_built)
    app.set_html_assets_policy("always")
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
