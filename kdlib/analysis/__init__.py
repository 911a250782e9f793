"""Analysis of stored runs and of the authors' logs: final accuracy, Table 2, the cost table, the archive of
paper-protocol runs. One definition each; every page and command reads results through here.

Imports point down: this package reads run records (JSON) and the authors' logs; it imports nothing from
``kdlib.book`` and runs no experiment.
"""
from kdlib.analysis import archive, authors_logs
from kdlib.analysis.costs import cost_table, cost_table_display, run_summaries
from kdlib.analysis.final import final_accuracy, final_rows, record_final, records_final, summarize
from kdlib.analysis.labels import (DATASET_LABELS, DATASETS, METHOD_LABELS, METHODS, PROTOCOL_LABELS,
                                   TEACHER_LABELS, dataset_label, method_label, teacher_label)
from kdlib.analysis.provenance import REPO_ROOT, display_path, head_commit
from kdlib.analysis.separation import paired_difference, separation_text
from kdlib.analysis.table2 import format_cell, format_numeric, side_by_side, table2, table2_from_final, table2_numeric

__all__ = ["archive", "authors_logs", "cost_table", "cost_table_display", "run_summaries", "final_accuracy",
           "final_rows", "record_final", "records_final", "summarize", "DATASET_LABELS", "DATASETS",
           "METHOD_LABELS", "METHODS", "PROTOCOL_LABELS", "TEACHER_LABELS", "teacher_label", "dataset_label", "method_label", "REPO_ROOT",
           "display_path", "head_commit", "format_cell", "format_numeric", "side_by_side", "table2",
           "table2_from_final", "table2_numeric", "paired_difference", "separation_text"]
