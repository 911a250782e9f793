"""The projected time of each Table 2 column and of the whole table from measured step times
(``tools/gpu_check.py``'s stage 4; the step times: :mod:`benchmarks.step_times`).

**Projection formula** (per column c = dataset, method m of Table 2 under the authors' protocol, R = 10 runs):

    steps(m)  = epochs(m) * ceil(n(m) / batch_size),  n(m) = |D_train| = |D| - |D| // 10 for the methods that tune on
                D_val (gradient, proposed, hyperopt), |D| for the others (|D| = 60,000 / 12,800 / 50,000)
    evals(m)  = the epochs after which a run evaluates (eval_every = 5: epochs 0, 4, 9, ...; kdlib.train.evaluates_after)
    trainings(m) = hyperopt_evals (5) for hyperopt, else 1
    one run     = steps(m) * step + evals(m) * eval
    one_by_one: T(c) = sum_m R * trainings(m) * one run (one-by-one step and eval)
    stacked:    T(c) = sum_m ceil(R / S) * trainings(m) * one run (stacked step and eval of S = ``seeds`` runs)

with ``step`` the measured step of the method's variant (fixed for no distillation, naive, random and hyperopt's
trials; gradient_fd / proposed_fd for the tuned methods). Three projections are given: ``one_by_one`` (every run
alone), ``today`` (what ``--set engine=stacked`` runs now, from :func:`kdlib.experiments.runner.choose_backend`:
the stacked step where the engine implements the method -- every method of the authors' protocol, hyperopt's k-th
trials of all seeds as one stacked model -- one by one elsewhere) and ``all_stacked`` (every method stacked; where
a variant's stacked step was not measured, the stacked unrolled step stands in for it, and the column says so).
Table 2 = the sum over the three image columns;
the synthetic column runs on the CPU's batched engine in seconds and is left out.

kdlib is imported inside the functions, so that ``tools/gpu_check.py``'s parent process starts without kdlib's
dependencies (each of its stages is a child process, and a missing package fails that stage, not the run).
"""
from __future__ import annotations

import math
from typing import Any

METHOD_VARIANT = {"no_distillation": "fixed", "naive": "fixed", "random": "fixed", "hyperopt": "fixed",
                  "gradient": "gradient_fd", "proposed": "proposed_fd"}
STACKED_STANDIN = {"gradient_fd": "gradient_unrolled", "proposed_fd": "proposed_unrolled"}


def column_protocol(dataset: str) -> dict[str, dict[str, Any]]:
    """Per method of Table 2 under the authors' protocol at the paper profile: steps, evaluations and trainings of
    one run, and whether ``--set engine=stacked`` runs it stacked today."""
    from kdlib.experiments.protocol import authors_protocol
    from kdlib.experiments.profiles import PAPER_IMAGES, profile_seeds, resolve_config
    from kdlib.methods import get_method
    from kdlib.names import METHOD_NAMES
    from kdlib.train import evaluates_after

    from kdlib.experiments.runner import choose_backend

    out = {}
    for m in METHOD_NAMES:
        cfg = resolve_config(dataset, m, "paper", 0, **authors_protocol(m, dataset), engine="stacked")
        n_full = PAPER_IMAGES[dataset]
        n = n_full - n_full // 10 if get_method(m).uses_val_split else n_full
        epochs = int(cfg.epochs)
        out[m] = dict(epochs=epochs, batch_size=int(cfg.batch_size), n_train=n,
                      steps=epochs * math.ceil(n / int(cfg.batch_size)),
                      evals=sum(evaluates_after(e, epochs, cfg.log_every, cfg.eval_every) for e in range(epochs)),
                      trainings=int(cfg.hyperopt_evals) if m == "hyperopt" else 1,
                      runs=profile_seeds("paper", dataset), estimator=cfg.estimator, variant=METHOD_VARIANT[m],
                      stacked_today=choose_backend(cfg, runs=profile_seeds("paper", dataset)).backend == "stacked")
    return out


def _timing(variants: dict[str, Any], variant: str, engine: str) -> tuple[float, float] | None:
    r = variants.get(variant, {}).get(engine, {})
    return (r["step_ms"] / 1e3, r["eval_s"]) if "step_ms" in r else None


def project(step_times: dict[str, Any], seeds: int) -> dict[str, Any]:
    """The projected time of each column and of Table 2 (module docstring's formula)."""
    per_column: dict[str, Any] = {}
    totals = {"one_by_one": 0.0, "today": 0.0, "all_stacked": 0.0}
    missing: list[str] = []
    for dataset, res in step_times.items():
        if "variants" not in res:
            missing.append(dataset)
            continue
        variants = res["variants"]
        col: dict[str, Any] = {"per_method": {}, "notes": []}
        sums = {k: 0.0 for k in totals}
        for m, p in (res.get("column_protocol") or column_protocol(dataset)).items():
            v = p["variant"]
            one = _timing(variants, v, "one_by_one")
            stacked = _timing(variants, v, "stacked")
            standin = None
            if stacked is None and v in STACKED_STANDIN:
                standin = _timing(variants, STACKED_STANDIN[v], "stacked")
            if one is None:
                missing.append(f"{dataset}/{m}")
                continue
            groups = math.ceil(p["runs"] / seeds)

            def cost(t: tuple[float, float], count: int) -> float:
                return count * p["trainings"] * (p["steps"] * t[0] + p["evals"] * t[1])

            t_one = cost(one, p["runs"])
            stacked_today = p["stacked_today"] if p["stacked_today"] is not None else (
                stacked is not None and m != "hyperopt")
            t_today = cost(stacked, groups) if (stacked_today and stacked is not None) else t_one
            best = stacked if stacked is not None else standin
            t_all = cost(best, groups) if best is not None else t_one
            if stacked is None and standin is not None:
                col["notes"].append(f"{m}: the stacked {v} step is not implemented; all_stacked uses the stacked "
                                    f"{STACKED_STANDIN[v]} step in its place")
            col["per_method"][m] = dict(variant=v, steps=p["steps"], evals=p["evals"], trainings=p["trainings"],
                                        runs=p["runs"], one_by_one_s=round(t_one, 1), today_s=round(t_today, 1),
                                        all_stacked_s=round(t_all, 1), stacked_today=bool(stacked_today))
            sums["one_by_one"] += t_one
            sums["today"] += t_today
            sums["all_stacked"] += t_all
        col.update({f"{k}_min": round(v / 60, 2) for k, v in sums.items()})
        per_column[dataset] = col
        for k in totals:
            totals[k] += sums[k]
    busy = [r["variants"][v]["stacked"].get("busy_fraction") for r in step_times.values() if "variants" in r
            for v in r["variants"] if isinstance(r["variants"][v].get("stacked"), dict)]
    busy = [b for b in busy if b is not None]
    table2 = {k: round(v / 60, 2) for k, v in totals.items()}
    return dict(formula=("steps(m) = epochs(m) * ceil(n(m) / batch_size); run = steps * step + evals * eval; "
                         "column = sum_m count(m) * trainings(m) * run, count = runs (one by one) or ceil(runs / S) "
                         "(stacked, S seeds per model); Table 2 = the three image columns (synthetic: CPU, seconds)"),
                seeds_stacked=seeds, per_column=per_column, table2_min=table2,
                target=dict(table2_all_stacked_le_30_min=(table2["all_stacked"] <= 30) if not missing else None,
                            stacked_busy_fraction_min=min(busy) if busy else None,
                            stacked_busy_ge_80=(min(busy) >= 0.8) if busy else None),
                incomplete=missing)
