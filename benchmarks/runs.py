"""Whole runs: ``run_s[method]``, a short run per method of Table 2 on the CIFAR-10 student (same epochs and
data for all), with the ratios ``proposed/gradient`` and ``gradient/no_distillation``; hyperopt counted in full
trainings."""
from __future__ import annotations

from typing import Any

import torch

from benchmarks.fixtures import fake_teacher, image_data
from benchmarks.timing import Timer, rounded
from kdlib.experiments.profiles import resolve_config
from kdlib.methods import get_method
from kdlib.models import make_student
from kdlib.names import METHOD_NAMES
from kdlib.train import Problem, Split


def bench_runs(device: torch.device, quick: bool, allow_real: bool) -> dict[str, Any]:
    """A short whole run per method on the CIFAR-10 student (same epochs and data for all)."""
    n_train, n_test, epochs = (384, 64, 1) if quick else (2560, 512, 2)
    x, y, src = image_data("cifar10_reduced", n_train + n_test, device, allow_real)
    t = fake_teacher(y)
    full = Split(x[:n_train], y[:n_train], t[:n_train])
    n_tr = n_train - n_train // 10
    train = Split(x[:n_tr], y[:n_tr], t[:n_tr])
    val = Split(x[n_tr:n_train], y[n_tr:n_train])
    test = Split(x[n_train:], y[n_train:])
    evals = 2 if quick else 5
    run_s: dict[str, float] = {}
    info: dict[str, Any] = {}
    timer = Timer(device)
    variants = [(m, "finite_difference") for m in METHOD_NAMES]
    if not quick:
        variants += [("gradient", "unrolled"), ("proposed", "unrolled")]
    for method, est in variants:
        cfg = resolve_config("cifar10_reduced", method, "smoke", 0, device=str(device), epochs=epochs,
                             n_train=n_train, lr_step_epochs=1, hyperopt_evals=evals, estimator=est, e1=10, e2=10,
                             log_every=1)
        m = get_method(method)
        problem = Problem(train=train if m.uses_val_split else full, val=val, test=test,
                          make_student=lambda: make_student("cifar10_reduced"))
        t_run, res = timer.once(lambda: m.run(cfg, problem))
        key = method if est == "finite_difference" else f"{method}[{est}]"
        run_s[key] = rounded(t_run)
        info[key] = dict(full_trainings=res.full_trainings, hypergrad_evals=res.history[-1]["hypergrad_evals"],
                         per_full_training_s=rounded(t_run / res.full_trainings))
    ratios = {"proposed/gradient": rounded(run_s["proposed"] / run_s["gradient"], 4),
              "gradient/no_distillation": rounded(run_s["gradient"] / run_s["no_distillation"], 4),
              "hyperopt/no_distillation": rounded(run_s["hyperopt"] / run_s["no_distillation"], 4)}
    if "proposed[unrolled]" in run_s:
        ratios["proposed/gradient[unrolled]"] = rounded(run_s["proposed[unrolled]"] / run_s["gradient[unrolled]"], 4)
        ratios["gradient[unrolled]/no_distillation"] = rounded(run_s["gradient[unrolled]"] / run_s["no_distillation"], 4)
    return dict(run_s=run_s, run_ratios=ratios, run_info=info,
                run_setup=dict(student="cifar10 (Cifar_Very_Tiny)", n_train=n_train, n_test=n_test, epochs=epochs,
                               batch_size=128, e1=10, e2=10, hyperopt_evals=evals, data=src,
                               estimator_default="finite_difference"))
