"""kdlib: metaparameter optimization in knowledge distillation (Gorpinich, Bakhteev, Strijov).

The public API, one concept per module: :class:`Tuner` (tuning (lambda1, T) in any training loop, Sec. 3),
:func:`hypergradient` (eq. 3), :func:`distillation_loss` / :func:`validation_loss` (L_train, L_val of
Sec. 2), :func:`fit_line` / :func:`extrapolate` (eq. 4, Algorithm 1), :func:`project` (the box), and
:func:`cycle` (an endless, re-iterating loader). The paper's experiments live in ``kdlib.methods`` (the six
strategies, and three 2023-24 adaptive-temperature methods beside them), ``kdlib.train`` (the one training loop)
and the runner.
"""
from kdlib.hypergrad import hypergradient
from kdlib.losses import distillation_loss, validation_loss
from kdlib.metaparams import project
from kdlib.schedules import Schedule
from kdlib.trajectory import extrapolate, fit_line
from kdlib.tuner import NonFiniteHypergradient, Tuner, cycle

__version__ = "0.1.0"

__all__ = ["Tuner", "cycle", "NonFiniteHypergradient", "Schedule", "hypergradient", "distillation_loss",
           "validation_loss", "fit_line", "extrapolate", "project", "__version__"]
