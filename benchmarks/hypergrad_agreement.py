"""Agreement of every hypergradient estimator with the true one-step hypergradient, per optimizer.

    python -m benchmarks.hypergrad_agreement

The truth is float64 central differences through one REAL step of a deep copy of model and optimizer, after 30
real steps of a BatchNorm MLP (the set-up of ``tests/test_hypergrad_optimizers.py``, 5 seeds). Prints JSON: per
optimizer and estimator, the worst cosine and the worst |norm ratio - 1|; the row "plain SGD at the group lr"
is what kdlib returned before it differentiated through the optimizer actually used.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_hypergrad_optimizers import LAM, agreement, batches, central_difference, trained  # noqa: E402

from kdlib.hypergrad import hypergradient  # noqa: E402

ESTIMATORS = {"unrolled (cotangent)": dict(unrolled_impl="cotangent"),
              "unrolled (reverse)": dict(unrolled_impl="reverse"),
              "forward": dict(method="forward"), "finite_difference": dict(method="finite_difference"),
              "higher reference": dict(unrolled_impl="higher")}
OLD = "plain SGD at the group lr (before)"


def main(seeds: int = 5) -> dict:
    torch.set_num_threads(1)
    table = {}
    for name in ("sgd", "sgd_momentum_nesterov_wd", "adam", "adamw"):
        rows: dict[str, list] = {k: [] for k in [*ESTIMATORS, OLD]}
        for seed in range(seeds):
            model, opt = trained(name, steps=30, seed=seed)
            batch, val = batches(1000 + seed)
            ref = central_difference(model, opt, batch, val, LAM)
            for k, o in ESTIMATORS.items():
                rows[k].append(agreement(hypergradient(model, batch, val, LAM, optimizer=opt, **o), ref))
            rows[OLD].append(agreement(hypergradient(model, batch, val, LAM, lr=opt.param_groups[0]["lr"]), ref))
        table[name] = {k: {"min_cosine": round(min(c for c, _ in v), 6),
                           "max_abs_norm_ratio_minus_1": float(f"{max(abs(r - 1) for _, r in v):.2e}")}
                       for k, v in rows.items()}
    return table


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
