"""Helpers of the book's pages (used by ``notebooks/`` only): the page banner and display helpers
(:mod:`kdlib.book.page`), the figures (:mod:`kdlib.book.plots`), the Theorem 1 toy (:mod:`kdlib.book.toy`), the
image-dataset page (:mod:`kdlib.book.image_page`), the archived paper-protocol section
(:mod:`kdlib.book.archive_page`) and the "why the branches?" section (:mod:`kdlib.book.branches`).

Imports point down: this package may import :mod:`kdlib.analysis` and the experiment code, never the reverse.
The names a page displays from :mod:`kdlib.analysis` (Table 2, costs, labels) are re-exported here, so that a
page needs one namespace for what it shows; the submodules with figures and runs are imported explicitly.
"""
from kdlib.analysis import (DATASET_LABELS, DATASETS, METHOD_LABELS, METHODS, cost_table, cost_table_display,
                            display_path, final_accuracy, head_commit, run_summaries, side_by_side, table2,
                            table2_numeric)
from kdlib.book.page import (PageBanner, banner, page_configs, repo_root, resolve_seeds, results_dir, results_root,
                             scale_text, show_markdown, show_table, source_text, teacher_table, to_markdown)

__all__ = ["DATASET_LABELS", "DATASETS", "METHOD_LABELS", "METHODS", "cost_table", "cost_table_display",
           "display_path", "final_accuracy", "head_commit", "run_summaries", "side_by_side", "table2",
           "table2_numeric", "PageBanner", "banner", "page_configs", "repo_root", "resolve_seeds", "results_dir",
           "results_root", "scale_text",
           "show_markdown", "show_table", "source_text", "teacher_table", "to_markdown"]
