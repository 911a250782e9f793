"""Read the built book as a reader does: every page in a headless browser at 1400 px.

``python tools/render_check.py [book/_build/html] [--screenshots DIR] [--chromium PATH]``

For each page, Chromium (headless) loads the HTML, runs its scripts (MathJax included) and dumps the rendered DOM;
the visible text outside code cells and code blocks is then scanned for what a reader should never see:

* raw LaTeX: ``$...$`` or ``\\lambda``-style commands left in text (MathJax renders math into ``mjx-container``);
* local paths: ``/work/``, ``/home/``, ``/tmp/``, ``/Users/``, ``C:\\``;
* internal names: kdlib's method and dataset keys (``no_distillation``, ``cifar10_reduced``, ...) and raw frame
  artefacts (``NaN``, ``Unnamed:``), outside code.

Code cells and inline code are exempt: names there are what a reader types. With ``--screenshots`` each page is
also captured at 1400 px wide. Prints one JSON object (pages, findings per page) and exits 1 if anything was found.
Chromium is not a dependency of kdlib; install it with your package manager (``apt-get install chromium``).
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bs4 import BeautifulSoup

WIDTH = 1400
LOCAL_PATH = re.compile(r"(/work/|/home/|/tmp/|/Users/|[A-Z]:\\\\)")
RAW_LATEX = re.compile(r"(\$[^$\s][^$]*\$|\\(lambda|alpha|beta|mathcal|frac|mathbb|operatorname|sum|nabla)\b)")
INTERNAL = re.compile(r"\b(no_distillation|cifar10_reduced|fashion_mnist|lambda1_authors\w*|temperature_0|"
                      r"final_accuracy|test_accuracy|hypergrad_evals|full_trainings|Unnamed: \d+|NaN)\b")
SKIP_TAGS = ("code", "pre", "script", "style", "mjx-container", "svg", "noscript", "kbd", "tt")
SKIP_CLASSES = ("cell_input", "highlight", "headerlink", "bd-sidebar-primary", "bd-search", "MathJax")


def chromium_binary(explicit: str | None) -> str:
    for name in ([explicit] if explicit else []) + ["chromium", "chromium-browser", "google-chrome", "chrome"]:
        if name and shutil.which(name):
            return shutil.which(name)  # type: ignore[return-value]
    raise SystemExit("render_check: no Chromium found; install it (apt-get install chromium) or pass --chromium")


def _flags(profile: Path) -> list[str]:
    return ["--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={profile}",
            f"--window-size={WIDTH},2000", "--virtual-time-budget=15000", "--run-all-compositor-stages-before-draw"]


def rendered_dom(chrome: str, page: Path, profile: Path) -> str:
    out = subprocess.run([chrome, *_flags(profile), "--dump-dom", page.resolve().as_uri()],
                         capture_output=True, text=True, timeout=180)
    if out.returncode != 0 or "<html" not in out.stdout:
        raise RuntimeError(f"chromium could not render {page}: {out.stderr[-500:]}")
    return out.stdout


def screenshot(chrome: str, page: Path, dest: Path, profile: Path, height: int) -> None:
    flags = [f for f in _flags(profile) if not f.startswith("--window-size")] + [f"--window-size={WIDTH},{height}"]
    subprocess.run([chrome, *flags, f"--screenshot={dest}", page.resolve().as_uri()], capture_output=True,
                   timeout=180, check=False)


def visible_text(html: str) -> str:
    """The article's text a reader sees, without code, math containers and navigation."""
    soup = BeautifulSoup(html, "html.parser")
    main = soup.find("article") or soup.find("main") or soup.body or soup
    for tag in main.find_all(SKIP_TAGS):
        tag.decompose()
    for tag in main.find_all(class_=lambda c: c is not None and any(k in c for k in SKIP_CLASSES)):
        tag.decompose()
    return main.get_text(" ", strip=True)


def findings(text: str) -> dict[str, list[str]]:
    def ctx(rx: re.Pattern) -> list[str]:
        hits = []
        for m in rx.finditer(text):
            hits.append(text[max(0, m.start() - 40):m.end() + 40].replace("\n", " "))
        return hits[:10]

    out = {"local_path": ctx(LOCAL_PATH), "raw_latex": ctx(RAW_LATEX), "internal_name": ctx(INTERNAL)}
    return {k: v for k, v in out.items() if v}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("html", nargs="?", default="book/_build/html")
    p.add_argument("--screenshots", default=None, help="write one PNG per page here")
    p.add_argument("--height", type=int, default=9000, help="screenshot height in px")
    p.add_argument("--chromium", default=None)
    a = p.parse_args(argv)
    root = Path(a.html)
    pages = sorted(q for q in root.glob("*.html") if q.name not in ("genindex.html", "search.html"))
    if not pages:
        raise SystemExit(f"render_check: no pages in {root}; build the book first (make book)")
    chrome = chromium_binary(a.chromium)
    report: dict[str, object] = {"width_px": WIDTH, "pages": len(pages), "findings": {}}
    with tempfile.TemporaryDirectory() as profile:
        for page in pages:
            found = findings(visible_text(rendered_dom(chrome, page, Path(profile))))
            if found:
                report["findings"][page.name] = found  # type: ignore[index]
            if a.screenshots:
                Path(a.screenshots).mkdir(parents=True, exist_ok=True)
                screenshot(chrome, page, Path(a.screenshots) / f"{page.stem}.png", Path(profile), a.height)
    print(json.dumps(report, indent=1, ensure_ascii=False))
    return 1 if report["findings"] else 0


if __name__ == "__main__":
    sys.exit(main())
