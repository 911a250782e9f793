"""The archived paper-protocol runs of a dataset (``archive/<dataset>/<protocol>/runs``, see
:mod:`kdlib.analysis.archive`) beside the authors' logs, run by run: the section of the reduced CIFAR-10 page
that is the same at every profile, because it reads stored records and logs and runs nothing.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from kdlib.analysis import archive as A
from kdlib.analysis import authors_logs
from kdlib.analysis.labels import DATASET_LABELS, METHOD_LABELS, METHODS, PROTOCOL_LABELS, teacher_label
from kdlib.analysis.provenance import REPO_ROOT, display_path
from kdlib.book import plots
from kdlib.book.page import error_line, show_markdown, show_table
from kdlib import cpu_kernels
from kdlib.experiments.profiles import PAPER_IMAGES, resolve_config
from kdlib.experiments.protocol import (archive_dir, archive_root, authors_protocol, pending_dir, protocol_departures,
                                       protocol_differences)
from kdlib.experiments.recheck import compare_rows, rerun, same_kernels
from kdlib.experiments.store import cpu_capability


def column_name(protocol: str, state: str) -> str:
    """``"paper protocol, <protocol label> (archive)"``, or ``"(archive, in progress)"`` for a column still being
    computed (``state`` from :func:`kdlib.analysis.archive.column_states`)."""
    return (f"paper protocol, {PROTOCOL_LABELS.get(protocol, protocol)} "
            f"({'archive, in progress' if state == 'in progress' else 'archive'})")


def archive_columns(dataset: str = "cifar10_reduced") -> dict[str, pd.Series]:
    """:func:`column_name` -> the formatted Table 2 column of the archived runs of ``dataset`` (a column in
    progress included; empty when the archive holds none), ``"...: runs"`` (finished runs per method) beside it,
    and ``"...: diverged runs"`` when some run of that protocol diverged: the extra columns of a Table 2 slice."""
    cols = {}
    states = A.column_states(dataset)
    for protocol, t in A.archive_table2(A.load_archive(dataset, pending=True), dataset).items():
        name = column_name(protocol, states[protocol])
        cols[name] = t[dataset]
        cols[f"{name}: runs"] = t["runs"]
        if "diverged" in t:
            cols[f"{name}: diverged runs"] = t["diverged"]
    return cols


def archive_path(path: Path) -> str:
    """``path`` inside the archive for a reader: relative to the repository (``archive/...``), or ``[archive]/...``
    where :func:`archive_root` lies outside it."""
    root = archive_root().resolve()
    return display_path(path, None if root.is_relative_to(REPO_ROOT.resolve()) else {"[archive]": root})


def absent_methods(dataset: str, records: list[dict]) -> str:
    """The Table 2 methods an archived column holds no run of, and why where the reason is on record: ``""``
    when it holds every method. A method the paper prints no value for (no authors' log of it in
    :data:`kdlib.analysis.authors_logs.TABLE2_FILES`) has nothing to be set beside, so the archive's queue leaves
    it out (issue 19: full CIFAR-10's hyperopt)."""
    have = {r["config"]["method"] for r in records}
    missing = [m for m in METHODS if m not in have]
    unlogged = [m for m in missing if authors_logs.TABLE2_FILES.get(dataset, {}).get(m) is None]
    parts = []
    if unlogged:
        names = ", ".join(METHOD_LABELS.get(m, m) for m in unlogged)
        parts.append(f"{names} runs: the paper prints no {names} value for {DATASET_LABELS.get(dataset, dataset)} "
                     "and the authors left no log of one, so there is nothing to set such runs beside, and the "
                     "archive's queue (`tools/archive_table2.py`) leaves them out")
    if logged := [m for m in missing if m not in unlogged]:
        parts.append(", ".join(METHOD_LABELS.get(m, m) for m in logged) + " runs yet")
    return "; and no ".join(parts)


def show_archive(dataset: str = "cifar10_reduced") -> dict[str, object]:
    """Everything the page shows about the archive of ``dataset``: where it is and what it holds (or that it is
    empty), its provenance, the authors' initial sequence and branches, the run-by-run branch table, final
    accuracy against initial T, and the λ1 / T trajectories. Returns the frames it showed."""
    label = DATASET_LABELS.get(dataset, dataset)
    archive = A.load_archive(dataset, pending=True)
    states = A.column_states(dataset)
    where = archive_path(archive_root() / dataset)
    logs = authors_logs.find_logs_dir()
    out: dict[str, object] = {"archive": archive}
    if A.archive_is_empty(archive):
        show_markdown(f"**The archive is empty.** Neither `{where}/{{authors,defaults}}/runs/` nor "
                      f"`{archive_path(archive_root() / 'pending' / dataset)}` holds a run record yet, "
                      f"so this section shows the authors' {label} runs alone. Once the paper-protocol runs are "
                      "archived there, this section shows them beside the authors' run by run, at every profile.")
    else:
        folder = {p: pending_dir(dataset, p) if states[p] == "in progress" else archive_dir(dataset, p)
                  for p in archive}
        show_markdown(f"Archived paper-protocol runs of {label} (full scale, run by the project's CLI and stored "
                      "with their provenance; not re-run by this build): "
                      + ", ".join(f"{PROTOCOL_LABELS.get(p, p)}: {len(r)} records in `{archive_path(folder[p])}`"
                                  for p, r in archive.items() if r) + ".")
        for p, state in states.items():
            if state == "in progress":
                show_markdown(f"**In progress.** The {PROTOCOL_LABELS.get(p, p)} column is still being computed "
                              f"(`{archive_path(pending_dir(dataset, p))}`, committed as its runs finish): it holds "
                              f"{len(archive[p])} of its runs so far, " + ", ".join(
                                  f"{METHOD_LABELS.get(m, m)} {k}" for m, k in
                                  pd.Series([r['config']['method'] for r in archive[p]]).value_counts(sort=False)
                                  .items()) + ". Every number below from this column is over those runs only.")
        for p, state in states.items():
            if state == "archived" and (note := absent_methods(dataset, archive[p])):
                show_markdown(f"The {PROTOCOL_LABELS.get(p, p)} column has no {note}.")
        out["provenance"] = A.provenance_table(archive)
        show_table(out["provenance"], index=False)
    if logs is None:
        show_markdown("The authors' logs are not on this machine, so there is nothing to compare run by run.")
        return out
    theirs = A.authors_run_table(logs, dataset)
    ours = A.run_table(archive)
    out.update(theirs=theirs, ours=ours)
    # the authors' runs: initial sequence and branches
    shown = theirs.assign(method=theirs.method.map(METHOD_LABELS))[
        ["method", "run", "lambda1_authors_0", "temperature_0", "lambda1_authors_final", "temperature_final",
         "final_accuracy", "branch"]]
    shown.columns = ["method", "run", "λ1 after epoch 0 (authors' convention)", "T after epoch 0",
                     "final λ1 (authors' convention)", "final T", "final accuracy", "branch"]
    show_markdown(f"The authors' tuned {label} runs (`{authors_logs.TABLE2_FILES[dataset]['gradient']}`, "
                  f"`{authors_logs.TABLE2_FILES[dataset]['proposed']}`). λ1 is in their convention, the weight "
                  f"of the distillation term. The branch is where it ends: *distillation* at or above "
                  f"{A.DISTILLATION_MIN}, *pure CE* at or below {A.PURE_CE_MAX}, *between* otherwise.")
    show_table(shown, index=False, floatfmt=".3f")
    runs = pd.concat([theirs, ours], ignore_index=True)
    if len(ours):
        comp = A.branch_comparison(ours, theirs)
        out["comparison"] = comp
        agree = A.agreement(comp).assign(method=lambda d: d.method.map(METHOD_LABELS))
        show_markdown("Run by run: under the authors' protocol (`init_law=\"authors\"`) our run with seed *i* "
                      "starts from the authors' *i*-th draw, so it is set beside their *i*-th run. Under kdlib's "
                      "defaults the initial values are kdlib's own draws: the same pairing then only shows how "
                      "the branches are distributed, not whether a run follows the authors'.")
        show_table(agree, index=False)
        show_table(comp.assign(method=comp.method.map(METHOD_LABELS)).rename(columns={"same_branch": "same branch"}),
                   index=False, floatfmt=".3f")
    plots.final_vs_initial_temperature(runs, title=f"{label}: final accuracy against the initial temperature, "
                                                   "run by run")
    plt.show()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    cur = authors_logs.parse_log(logs / authors_logs.TABLE2_FILES[dataset]["gradient"], dataset=dataset,
                                 method="gradient")
    br = dict(zip(theirs[theirs.method == "gradient"].run, theirs[theirs.method == "gradient"].branch))
    plots.run_trajectories(cur.assign(lambda1_authors=cur.lambda1_theirs), "lambda1_authors", x="step", ax=axes[0],
                           color_by_branch=br, ylabel=r"$\lambda_1$ (authors' convention)",
                           title="authors' gradient-based runs")
    plots.run_trajectories(cur, "temperature", x="step", ax=axes[1], color_by_branch=br, ylabel="$T$",
                           title="authors' gradient-based runs")
    fig.tight_layout()
    plt.show()
    if len(ours):
        curves = A.archive_curves(archive)
        for protocol in archive:
            d = curves[(curves.protocol == protocol) & (curves.method == "gradient")]
            if not len(d):
                continue
            o = ours[(ours.source == f"kdlib, {PROTOCOL_LABELS.get(protocol, protocol)}") & (ours.method == "gradient")]
            obr = dict(zip(o.run, o.branch))
            fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
            plots.run_trajectories(d.assign(lambda1_authors=1.0 - d.lambda1), "lambda1_authors", by="seed",
                                   ax=axes[0], color_by_branch=obr, ylabel=r"$\lambda_1$ (authors' convention)",
                                   title=f"kdlib gradient-based, {PROTOCOL_LABELS.get(protocol, protocol)}")
            plots.run_trajectories(d, "temperature", by="seed", ax=axes[1], color_by_branch=obr, ylabel="$T$",
                                   title=f"kdlib gradient-based, {PROTOCOL_LABELS.get(protocol, protocol)}")
            fig.tight_layout()
            plt.show()
            fig, ax = plt.subplots(figsize=(7.5, 4.4))
            plots.accuracy_curves(curves[curves.protocol == protocol], x="epoch",
                                  authors=authors_logs.curves(logs, datasets=[dataset]), ax=ax, xlabel="epoch",
                                  title=f"{label}, paper protocol ({PROTOCOL_LABELS.get(protocol, protocol)}): "
                                        "archive solid, authors' logs dashed")
            plt.show()
    return out


# why kdlib's default differs from the authors' code, per field of kdlib.experiments.protocol.AUTHORS_PROTOCOL
DEFAULT_REASONS: dict[str, str] = {
    "init_law": "each run draws its start from its own seed (`default_rng(seed)`), so a run does not depend on "
                "how many runs came before it; the authors' runs take successive draws of one stream",
    "fd_virtual_lr": "eq. (3) looks one step ahead, so the virtual step is the step the optimizer takes next, "
                     "at the current (decayed) lr; the authors' code kept the initial lr after StepLR decayed it",
    "proposed_reset": "Algorithm 1 as printed counts iterations over the whole run; the authors' code restarts "
                      "the count at every epoch",
    "loss_form": "the paper's formula (soft cross-entropy); it differs from the KL form by the teacher's "
                 "entropy, which has no w-gradient, so the hypergradients are the same and only the logged "
                 "training loss differs",
    "clamp_extrapolation": "an extrapolated value is projected into the box (λ1 in [0, 1], T in [0.1, 10]) like "
                           "a tuned one; unprojected, the authors' logs show λ1 = 1.087 and T < 0",
    "random_law": "the paper's text: T ~ U(0.1, 10), drawn from the run's own seed; the authors' code drew "
                  "log10 T ~ U(-1, 1), and their run i took their i-th draw, the start of their tuned run i",
    "eval_every": "test and validation accuracy at every epoch (50 points per curve instead of 11); "
                  "training is unchanged",
}


def protocol_table(datasets: tuple[str, ...] = ("fashion_mnist", "cifar10_reduced", "cifar10")) -> pd.DataFrame:
    """The authors' protocol of each image dataset, field by field (rows) and dataset (columns), read from the
    configs the archive's runs are made with (:func:`kdlib.experiments.protocol.authors_protocol` at the paper
    profile), with the authors' log files each column is compared with."""
    cols = {}
    for ds in datasets:
        cfg = resolve_config(ds, "gradient", "paper", 0, **authors_protocol("gradient", ds))
        hyp = resolve_config(ds, "hyperopt", "paper", 0, **authors_protocol("hyperopt", ds))
        n = PAPER_IMAGES[ds]
        files = authors_logs.TABLE2_FILES[ds]
        cols[DATASET_LABELS.get(ds, ds)] = {
            "epochs (hyperopt trials)": f"{cfg.epochs} ({hyp.epochs})",
            "training images: baselines / tuned methods + validation": f"{n:,} / {n - n // 10:,} + {n // 10:,}",
            "batch, student lr (StepLR)": f"{cfg.batch_size}, {cfg.lr:g} × {cfg.lr_gamma:g} every "
                                          f"{cfg.lr_step_epochs} epochs",
            "meta lr × clip (largest meta step)": f"{cfg.meta_lr:g} × {cfg.meta_clip:g} = {cfg.meta_lr * cfg.meta_clip:g}",
            "metaparameter steps per epoch": f"{-(-(n - n // 10) // cfg.batch_size)}",
            "T_val, hypergradient": f"{cfg.t_val:g}, {cfg.estimator.replace('_', ' ')}",
            "proposed: e1, e2 (reset)": f"{cfg.e1}, {cfg.e2} ({cfg.proposed_reset})",
            "train and validation batches of the tuned methods": (
                "flipped and padded-cropped (use_aug=True)" + ("" if cfg.augment_val else ", training only")
                if cfg.augment != "none" else "as stored (use_aug=False)"),
            "test accuracy logged": f"epoch 0 and every {cfg.eval_every}th",
            "teacher": teacher_label(cfg.teacher),
            "authors' logs": ", ".join(f"`{f}`" for f in dict.fromkeys(v for v in files.values() if v)),
        }
    return pd.DataFrame(cols)


def show_protocols(dataset: str = "cifar10_reduced") -> dict[str, pd.DataFrame]:
    """The archive's two protocols side by side: the fields that differ (read from code) with the reason for
    kdlib's default, and for the tuned methods the runs per branch with their mean initial T and final accuracy
    (ours under each protocol, and the authors' logs). Returns the frames it showed."""
    diff = protocol_differences(dataset)
    shown = diff.assign(field=diff.field.map(lambda f: f"`{f}`"),
                        **{"why kdlib's default": diff.field.map(lambda f: DEFAULT_REASONS.get(f, ""))})
    show_table(shown.astype(str), index=False)
    out: dict[str, pd.DataFrame] = {"differences": diff}
    archive = A.load_archive(dataset, pending=True)
    runs = [A.run_table(archive)]
    logs = authors_logs.find_logs_dir()
    if logs is not None:
        runs.append(A.authors_run_table(logs, dataset))
    runs_df = pd.concat([r for r in runs if len(r)], ignore_index=True) if any(len(r) for r in runs) \
        else A.run_table({})
    summary = A.branch_summary(runs_df)
    out["branches"] = summary
    if len(summary):
        show_table(summary.assign(method=summary.method.map(METHOD_LABELS)), index=False, floatfmt=".3f")
        lines = []
        for (source, method), d in runs_df.groupby(["source", "method"], sort=True):
            k = int((d.branch == "distillation").sum())
            lines.append(f"- {source}, {METHOD_LABELS.get(method, method)}: {k} of {len(d)} runs end on the "
                         f"distillation branch; mean final accuracy {d.final_accuracy.mean():.4f}.")
        show_markdown("\n".join(lines))
    return out


def show_recheck(dataset: str = "cifar10_reduced", first_rows: int = 1) -> pd.DataFrame | None:
    """The book's guard against a stale archive: for every archived column of ``dataset`` (a column in progress
    included), re-run the first epoch(s) of one of its records (its gradient-based run with seed 0, else its first
    record) and show the comparison; raise ``AssertionError`` when a value moved beyond its tolerance
    (:func:`kdlib.experiments.recheck.tolerance_for`: strict with the record's CPU kernels; across kernels the
    metaparameters only). Says so when the archive is empty or the data are missing. Returns the comparisons, one
    block per column (``protocol`` column), or None when nothing was re-run."""
    archive = A.load_archive(dataset, pending=True)
    if A.archive_is_empty(archive):
        show_markdown("Nothing to re-check: the archive holds no record yet.")
        return None
    tables = []
    states = A.column_states(dataset)
    for protocol, recs in archive.items():
        if not recs:
            continue
        pick = next((r for r in recs if r["config"]["method"] == "gradient" and int(r["config"]["seed"]) == 0),
                    recs[0])
        table = _recheck_one(pick, first_rows, column_name(protocol, states[protocol]))
        if table is not None:
            tables.append(table.assign(protocol=protocol))
    return pd.concat(tables, ignore_index=True) if tables else None


def _recheck_one(pick: dict, first_rows: int, column: str) -> pd.DataFrame | None:
    """Re-run and show one record of :func:`show_recheck` (``column`` names its archive column)."""
    c = pick["config"]
    what = f"{METHOD_LABELS.get(c['method'], c['method'])} run, seed {c['seed']}, of the column *{column}*"
    try:
        new = rerun(pick, first_rows)
    except FileNotFoundError as err:  # the data or the authors' logits are not on this machine: say so
        show_markdown(f"Not re-checked in this build: the archived {what} needs data this machine does not have "
                      f"({error_line(err, c['dataset'])}).")
        return None
    except cpu_kernels.PinError as err:  # a pinned record on a host without that instruction set
        show_markdown(f"Not re-checked in this build ({what}): {err}.")
        return None
    table = compare_rows(pick, new, first_rows)
    pin, made = cpu_kernels.of_record(pick)
    model = (pick.get("provenance") or {}).get("cpu_model")
    same = same_kernels(pick, new)
    if pin != cpu_kernels.NATIVE and same:
        how = (f"made under the {pin.upper()} kernel pin (`kdlib run --cpu-kernels {pin}`) on this machine's CPU "
               f"model and re-run under it here (its own kernels: {cpu_capability()}), which computes what the "
               "archive's machine computed, so every value must come back within the tolerance shown")
    elif same:
        how = (f"made with this machine's CPU kernels ({made}) and CPU model, so every value must come back within "
               "the tolerance shown")
    else:
        if same is None and made:
            made_txt = (f"the {pin.upper() + ' pin' if pin != cpu_kernels.NATIVE else made + ' kernels'} on a CPU "
                        "its provenance does not name (a pin caps the instruction set, but another vendor's CPU "
                        "still rounds differently)")
        elif made and model and (pin, made) == cpu_kernels.of_record(new):
            made_txt = f"the same kernels on another CPU ({model})"
        else:
            made_txt = f"other CPU kernels ({made})" if made else "CPU kernels its provenance does not record"
        tol = table.groupby("field").tolerance.first()  # the tolerance compare_rows applied
        step = float(c["meta_lr"]) * float(c["meta_clip"])
        how = (f"made with {made_txt}; this machine's are {cpu_capability()}. Float rounding then differs from the "
               "first step, and the paper's lr 1.0 amplifies it in the student, so its accuracy is shown, not "
               f"compared; λ1 and T must come back within {tol['lambda1']} and {tol['temperature']}, i.e. "
               f"{tol['lambda1'] / step:.0f} and {tol['temperature'] / step:.0f} of the largest meta steps of this "
               f"run (meta_lr × clip = {step:g})")
    show_markdown(f"Re-run at build time of the first {first_rows} logged epoch(s) of the archived {what}, against "
                  f"its record, {how}:")
    field_names = {"test_accuracy": "test accuracy", "lambda1": "λ1", "temperature": "T"}
    show_table(table.drop(columns=["step"]).assign(field=table.field.map(lambda f: field_names.get(f, f))),
               index=False, floatfmt=".4f")
    bad = table[~table.ok]
    assert bad.empty, f"the archive is stale: {len(bad)} value(s) moved beyond tolerance:\n{bad.to_string()}"
    return table


# Runs made without one knob of the authors' protocol, kept beside the column for the dataset page's "Which knob?":
# dataset -> (folder under archive/<dataset>/, method, the one field they differ in, what that departure is)
KNOB_RUNS: dict[str, dict[str, tuple[str, tuple[str, ...], str]]] = {
    "cifar10": {"without_augment": ("gradient", ("augment", "augment_val"), "without the authors' augmentation"),
                "val_not_augmented": ("gradient", ("augment_val",), "with the training batches augmented only")},
}


def _knob_records(dataset: str, folder: str, method: str, absent: str) -> tuple[list[dict], Path] | None:
    """The ``method`` records of ``archive/<dataset>/<folder>/runs`` and the authors' logs folder; None (after
    saying ``absent``) when either is missing."""
    where = f"{dataset}/{folder}/runs"
    recs = [r for r in A.read_records(archive_root() / dataset / folder / "runs", where).values()
            if r["config"]["method"] == method]
    logs = authors_logs.find_logs_dir()
    if not recs or logs is None:
        show_markdown(f"*No {absent} is archived under `{where}`, or the authors' logs are absent.*")
        return None
    return recs, logs


def show_knob(dataset: str = "cifar10", folder: str = "without_augment") -> pd.DataFrame | None:
    """The runs of ``archive/<dataset>/<folder>/runs`` (:data:`KNOB_RUNS`: made under the authors' protocol but
    for the knob's fields) beside the runs of the same index under the protocol (the archive, a column in progress
    included) and the authors' logs: final accuracy and T per run, their means, and the accuracy curves. Checks
    that every such record departs from the protocol in those fields exactly. Returns the table it showed."""
    if folder not in KNOB_RUNS.get(dataset, {}):
        return None
    method, fields, what = KNOB_RUNS[dataset][folder]
    found = _knob_records(dataset, folder, method, f"run {what}")
    if found is None:
        return None
    off, logs = found
    for rec in off:
        departs = set(protocol_departures(rec["config"], dataset))
        if departs != set(fields):
            raise ValueError(f"{dataset}/{folder}/runs: seed {rec['config']['seed']} departs from the authors' "
                             f"protocol in {sorted(departs)}, not in {sorted(fields)} exactly; fix: keep only such "
                             f"runs there")
    archive = A.load_archive(dataset, pending=True)["authors"]
    on = [r for r in archive if r["config"]["method"] == method]
    ours_off = A.run_table({"off": off}, [method]).set_index("run")
    ours_on = A.run_table({"authors": on}, [method]).set_index("run")
    theirs = A.authors_run_table(logs, dataset, [method]).set_index("run")
    rows = []
    for run in ours_off.index:
        row = {"run": run, "authors: final accuracy": theirs.final_accuracy.get(run),
               "authors: final T": theirs.temperature_final.get(run),
               f"ours {what}: final accuracy": ours_off.final_accuracy[run],
               f"ours {what}: final T": ours_off.temperature_final[run]}
        done = run in ours_on.index
        row["ours, authors' protocol: final accuracy"] = ours_on.final_accuracy[run] if done else float("nan")
        row["ours, authors' protocol: final T"] = ours_on.temperature_final[run] if done else float("nan")
        rows.append(row)
    table = pd.DataFrame(rows).set_index("run")
    shown = table.copy()
    shown.loc["mean"] = table.mean(numeric_only=True)
    show_table(shown.round(4).astype(object).where(shown.notna(), "in progress"))
    spread = A.late_spread_table({what: off, "authors' protocol": archive}, logs, dataset, from_epoch=60)
    spread["method"] = spread.method.map(METHOD_LABELS)
    show_markdown("How much a run's test accuracy still moves between the checkpoints of epochs 60 and later "
                  "(median over runs of the standard deviation; the lr is then at most 1/64 of its start):")
    show_table(spread.round(5), index=False)
    curves = A.archive_curves({"off": off, "authors": [r for r in on if r["config"]["seed"] in set(table.index)]})
    theirs_curves = authors_logs.parse_log(logs / authors_logs.TABLE2_FILES[dataset][method], dataset, method)
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for i, run in enumerate(table.index):
        color = f"C{i}"
        t = theirs_curves[theirs_curves.run == run]
        ax.plot(t.step, t.accuracy, color=color, ls="--", lw=1)
        for protocol, ls in (("off", ":"), ("authors", "-")):
            c = curves[(curves.protocol == protocol) & (curves.seed == run)]
            ax.plot(c.epoch, c.test_accuracy, color=color, ls=ls, lw=1.4 if ls == "-" else 1)
    handles = [plt.Line2D([], [], color="k", ls=ls) for ls in ("--", ":", "-")]
    ax.legend(handles, ["authors' logs", f"ours {what}", "ours, authors' protocol"], fontsize=8)
    ax.set(xlabel="epoch", ylabel="test accuracy",
           title=f"{DATASET_LABELS.get(dataset, dataset)}, {METHOD_LABELS[method]}: one colour per run")
    plt.show()
    return table


def show_val_augment(dataset: str = "cifar10") -> pd.DataFrame | None:
    """The evidence for ``augment_val``: validation loss over test loss after epoch 0 in the authors' tuned logs of
    ``dataset`` and of reduced CIFAR-10 (whose loaders did not augment), and in the archive's runs under the
    authors' protocol (D_val augmented) that log their test loss. None (silently) where the protocol does not
    augment D_val; says so when the logs are absent. Returns the table it showed."""
    if not authors_protocol("gradient", dataset).get("augment_val"):
        return None
    logs = authors_logs.find_logs_dir()
    if logs is None:
        show_markdown("*The authors' logs are not on this machine: the validation and test losses cannot be set "
                      "side by side.*")
        return None
    groups = {"ours, authors' protocol (D_val augmented)": A.load_archive(dataset, pending=True)["authors"]}
    table = A.val_test_table(groups, logs, [dataset, "cifar10_reduced"])
    labels = {f"authors' logs, {dataset}": f"authors' logs, {DATASET_LABELS.get(dataset, dataset)}",
              "authors' logs, cifar10_reduced": "authors' logs, reduced CIFAR-10 (no augmentation)"}
    shown = table.assign(source=table.source.replace(labels), method=table.method.map(METHOD_LABELS))
    show_table(shown.round(3), index=False)
    return table


# Short runs of the baselines with the knob the tuned runs take (dataset -> folder, method, field), for
# the doubt the dataset page names: did the authors' baselines take it too?
BASELINE_KNOB_RUNS: dict[str, tuple[str, str, str]] = {"cifar10": ("baseline_augment", "no_distillation", "augment")}


def show_baseline_knob(dataset: str = "cifar10") -> pd.DataFrame | None:
    """Mean (± std, runs) test accuracy at each logged epoch of the short baseline runs of
    ``archive/<dataset>/<folder>/runs`` (:data:`BASELINE_KNOB_RUNS`: the authors' protocol but for the knob and a
    shorter run), beside the same epochs of the archived baseline column and the authors' baseline log. Checks
    that every such record departs from the protocol in the knob and ``epochs`` alone. Returns the table."""
    if dataset not in BASELINE_KNOB_RUNS:
        return None
    folder, method, field = BASELINE_KNOB_RUNS[dataset]
    found = _knob_records(dataset, folder, method, f"short {METHOD_LABELS[method].lower()} run with `{field}`")
    if found is None:
        return None
    short, logs = found
    value = authors_protocol("gradient", dataset).get(field)  # the tuned runs' value of the knob
    for rec in short:
        cfg = rec["config"]
        departs = set(protocol_departures(cfg, dataset)) - {"epochs"}
        if departs or cfg.get(field) != value:
            raise ValueError(f"{dataset}/{folder}/runs: seed {cfg['seed']} departs from the authors' protocol in "
                             f"{sorted(departs)}, not in {field!r} (and epochs) alone; fix: keep only such runs there")
    column = [r for r in A.load_archive(dataset, pending=True)["authors"] if r["config"]["method"] == method]
    ours = {f"ours with {field}={value!r}": short, f"ours, authors' protocol ({field} as stored)": column}
    theirs = authors_logs.parse_log(logs / authors_logs.TABLE2_FILES[dataset][method], dataset, method)
    epochs = sorted({h["epoch"] for r in short for h in r["history"]})
    cell = lambda v: f"{np.mean(v):.4f} ± {np.std(v):.4f} ({len(v)})"  # noqa: E731
    rows = []
    for e in epochs:
        row = {"epoch": e, "authors' logs": cell(theirs[theirs.step == e].accuracy.to_numpy())}
        for label, recs in ours.items():
            row[label] = cell([h["test_accuracy"] for r in recs for h in r["history"] if h["epoch"] == e])
        rows.append(row)
    table = pd.DataFrame(rows).set_index("epoch")
    show_table(table)
    return table
