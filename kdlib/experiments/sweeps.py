"""Named sweeps: grids of runner overrides that answer one question each.

:data:`BRANCHES` -- *why the branches?* Under the authors' protocol on reduced CIFAR-10
(:data:`kdlib.experiments.protocol.AUTHORS_PROTOCOL`) the gradient-based method (eq. 3 at every iteration) started
from a small T collapses to pure cross-entropy (kdlib's lambda1 -> 1, the authors' lambda1_a -> 0), while large-T
starts reach the distillation branch. The sweep asks whether the collapse comes from the greedy one-step horizon
of eq. (3): from the same starts (``init_law="authors"``: seed *i* starts at the authors' *i*-th draw) it runs

* ``one-step``: the archive's estimator (one finite-difference virtual step at the initial lr);
* ``unrolled K=5`` / ``unrolled K=10``: the exact reverse-mode hypergradient through K virtual SGD steps
  (:mod:`kdlib.hypergrad.unrolled`). The training loop gives the Tuner the current batch only, so the K virtual
  steps all take that batch (:func:`kdlib.hypergrad.state.as_batches`); the horizon is longer, the data is not;
* ``log T``: the one-step estimator with eq. (3)'s step taken on log T (``temperature_param="log"``,
  :func:`kdlib.schedules.meta_update`);

for the first ``epochs`` epochs at the paper's sizes, evaluating after every epoch (``eval_every=1``: the
evaluation does not touch the training or the metaparameter trajectory). Records go through
:func:`kdlib.experiments.runner.run_experiments` into ``archive/cifar10_reduced/branches/runs``.

:data:`ATTRIBUTION_CELLS` -- *which knob?* For the gradient-based method the archive's two reduced CIFAR-10
columns (``authors`` and ``defaults``) differ in two fields that touch its training: where each run starts
(``init_law``: the authors' successive draws, or each seed's own) and the lr of the finite-difference virtual
step (``fd_virtual_lr``: the initial lr, or the current, StepLR-decayed one). The other differing fields do not
touch a gradient-based run (``loss_form``: the KL and CE forms differ by the teacher's entropy, which has no
w-gradient; ``eval_every``: evaluation only; ``proposed_reset``, ``clamp_extrapolation``, ``random_law``: other
methods). The archive holds two corners of that 2 x 2 design; this sweep runs the other two, the full paper
protocol, 10 runs each, into ``archive/cifar10_reduced/attribution/runs``.

The grids of the synthetic pages (the runs of notebooks 04 and 09; each run goes through
:func:`~kdlib.experiments.runner.run_experiments` into ``<root>/<folder>``, ``root`` being the page's results
folder of its profile, and the runs already stored are skipped):

* :func:`e1_e2_grid` / :func:`run_e1_e2` -- *Fig. 6*: the proposed method (Algorithm 1) over its cycle lengths,
  ``e1`` iterations of eq. (3) then ``e2`` extrapolated by eq. (4): Fig. 6a sweeps ``e1 = e2``, Fig. 6b keeps
  ``e1 = 10`` and sweeps ``e2``;
* :func:`synthetic_protocols` / :func:`run_synthetic_protocols` -- the two data variants (the paper's text, the
  authors' code), each tuned on the test set (the paper's runs) and on 200 held-out points (``holdout=True``);
* :data:`ABLATIONS` / :func:`run_ablation` -- the reproduction notes' one-field switches on the synthetic data
  (authors' variant): the distillation term's form (``loss_form``: CE or KL, gradient-based method) and the
  projection of the extrapolated values into the box (``clamp_extrapolation``, proposed method).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from kdlib.experiments.protocol import AUTHORS_PROTOCOL, archive_root
from kdlib.experiments.runner import run_experiments
from kdlib.names import METHOD_NAMES

BRANCHES_DATASET = "cifar10_reduced"
BRANCHES_FOLDER = "branches"
# seed -> role: the authors' runs 2, 7, 9 start at small T (0.2-0.55 after their draws); run 0 at T ~ 8 (control)
BRANCHES_STARTS: dict[int, str] = {2: "small T", 7: "small T", 9: "small T", 0: "large T (control)"}
BRANCHES_VARIANTS: dict[str, dict[str, Any]] = {
    "one-step": dict(),
    "log T": dict(temperature_param="log"),
    "unrolled K=5": dict(estimator="unrolled", unroll_steps=5),
    "unrolled K=10": dict(estimator="unrolled", unroll_steps=10),
}
BRANCHES_EPOCHS = 3
# variant -> the starts it is run from, cheapest variant first
BRANCHES_PLAN: dict[str, tuple[int, ...]] = {
    "one-step": (2, 7, 9, 0), "log T": (2, 7, 9, 0), "unrolled K=5": (2, 7, 9, 0), "unrolled K=10": (2, 7, 9, 0)}


ATTRIBUTION_FOLDER = "attribution"
ATTRIBUTION_METHOD = "gradient"
ATTRIBUTION_SEEDS: tuple[int, ...] = tuple(range(10))
# the two fields of the 2 x 2 design, each with (authors' protocol, kdlib default)
ATTRIBUTION_FACTORS: dict[str, tuple[str, str]] = {"init_law": ("authors", "uniform"),
                                                   "fd_virtual_lr": ("initial", "current")}
# the two corners the archive's columns do not hold (the authors' column is (authors, initial), the defaults'
# column (uniform, current)): one field switched in each
ATTRIBUTION_CELLS: dict[str, dict[str, Any]] = {
    "authors' protocol, virtual step at the current lr": dict(AUTHORS_PROTOCOL, fd_virtual_lr="current"),
    "kdlib defaults, virtual step at the initial lr": dict(fd_virtual_lr="initial"),
}


def attribution_dir(root: str | os.PathLike | None = None, dataset: str = BRANCHES_DATASET) -> Path:
    """``<archive root>/<dataset>/attribution`` (the runner's out_dir; records under ``runs/``)."""
    return Path(root if root is not None else archive_root()) / dataset / ATTRIBUTION_FOLDER


def run_attribution(cells: Sequence[str] | None = None, seeds: Sequence[int] = ATTRIBUTION_SEEDS,
                    out_dir: str | os.PathLike | None = None, workers: int = 1, progress: bool = False,
                    **options: Any) -> None:
    """Run the ``cells`` of :data:`ATTRIBUTION_CELLS` (default: both) for ``seeds`` at the paper profile, the
    gradient-based method; the runs already stored are skipped. ``options`` go to
    :func:`~kdlib.experiments.runner.run_experiments` (e.g. ``threads``)."""
    out = attribution_dir() if out_dir is None else Path(out_dir)
    for cell in (ATTRIBUTION_CELLS if cells is None else cells):
        if cell not in ATTRIBUTION_CELLS:
            raise ValueError(f"unknown cell {cell!r}; choose from: {', '.join(ATTRIBUTION_CELLS)}")
        run_experiments(BRANCHES_DATASET, [ATTRIBUTION_METHOD], seeds=list(seeds), profile="paper", out_dir=out,
                        overrides=dict(ATTRIBUTION_CELLS[cell]), progress=progress, workers=workers, **options)


def branches_dir(root: str | os.PathLike | None = None) -> Path:
    """``<archive root>/cifar10_reduced/branches`` (the runner's out_dir; records under ``runs/``)."""
    return Path(root if root is not None else archive_root()) / BRANCHES_DATASET / BRANCHES_FOLDER


def branches_overrides(variant: str, epochs: int = BRANCHES_EPOCHS) -> dict[str, Any]:
    """The runner overrides of one variant: the authors' protocol, ``epochs`` epochs, evaluation every epoch."""
    if variant not in BRANCHES_VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of: {', '.join(BRANCHES_VARIANTS)}")
    return dict(AUTHORS_PROTOCOL, epochs=int(epochs), eval_every=1, **BRANCHES_VARIANTS[variant])


def variant_of(config: dict[str, Any]) -> str | None:
    """The variant name of a record's config (None if it is none of :data:`BRANCHES_VARIANTS`)."""
    for name, over in BRANCHES_VARIANTS.items():
        est = over.get("estimator", "finite_difference")
        if (config.get("estimator") == est and int(config.get("unroll_steps", 1)) == int(over.get("unroll_steps", 1))
                and config.get("temperature_param", "linear") == over.get("temperature_param", "linear")):
            return name
    return None


def run_branches(plan: dict[str, Sequence[int]] | None = None, epochs: int = BRANCHES_EPOCHS,
                 out_dir: str | os.PathLike | None = None, workers: int = 1, progress: bool = False,
                 **options: Any) -> None:
    """Run the sweep ``plan`` (variant -> seeds; default :data:`BRANCHES_PLAN`), one variant after the other in
    its order (cheapest first); the runs already stored are skipped.

    ``options`` go to :func:`~kdlib.experiments.runner.run_experiments` (e.g. ``threads``)."""
    out = branches_dir() if out_dir is None else Path(out_dir)
    for variant, seeds in (BRANCHES_PLAN if plan is None else plan).items():
        run_experiments(BRANCHES_DATASET, ["gradient"], seeds=list(seeds), profile="paper", out_dir=out,
                        overrides=branches_overrides(variant, epochs), progress=progress, workers=workers,
                        **options)


SYNTHETIC = "synthetic"
# Fig. 6's levels: (e1 = e2 of Fig. 6a, e2 of Fig. 6b at e1 = 10); the smoke profile runs two settings each
E1_E2_LEVELS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {"smoke": ((10, 20), (10, 20)),
                                                                   "default": ((10, 100, 500, 1000), (10, 20, 40, 90))}


def e1_e2_grid(profile: str) -> dict[str, list[tuple[int, int]]]:
    """figure -> its (e1, e2) settings at ``profile``: ``"6a: e1 = e2"`` and ``"6b: e1 = 10"``
    (:data:`E1_E2_LEVELS`)."""
    equal, second = E1_E2_LEVELS["smoke" if profile == "smoke" else "default"]
    return {"6a: e1 = e2": [(e, e) for e in equal], "6b: e1 = 10": [(10, e) for e in second]}


def run_e1_e2(seeds: Sequence[int], profile: str, root: str | os.PathLike, device: str = "cpu",
              variant: str = "authors") -> pd.DataFrame:
    """Run the proposed method on the synthetic data (``variant``) at every setting of :func:`e1_e2_grid`, each
    into ``<root>/synthetic_e1_<e1>_e2_<e2>``; the tidy results of all, with the columns ``figure``, ``setting``
    (``"e1=.., e2=.."``), ``e1`` and ``e2``."""
    frames = []
    for figure, settings in e1_e2_grid(profile).items():
        for e1, e2 in settings:
            d = run_experiments(SYNTHETIC, ["proposed"], list(seeds), profile, Path(root) / f"synthetic_e1_{e1}_e2_{e2}",
                                device=device, overrides={"e1": e1, "e2": e2, "variant": variant}, progress=False)
            frames.append(d.assign(figure=figure, setting=f"e1={e1}, e2={e2}", e1=e1, e2=e2))
    return pd.concat(frames, ignore_index=True)


def synthetic_protocols(variant: str = "authors") -> dict[str, tuple[dict[str, Any], str]]:
    """name -> (runner overrides, results folder) of the four protocols of the synthetic page: ``variant`` and the
    other data variant, each tuned on the test set (``val = test``, the paper's runs) and on held-out points
    (``holdout=True``). The first is the page's headline run (folder ``synthetic``)."""
    other = "paper" if variant == "authors" else "authors"
    return {f"{variant} variant, val = test": ({"variant": variant}, SYNTHETIC),
            f"{other} variant, val = test": ({"variant": other}, f"synthetic_{other}"),
            f"{variant} variant, held-out val": ({"variant": variant, "holdout": True}, f"synthetic_{variant}_holdout"),
            f"{other} variant, held-out val": ({"variant": other, "holdout": True}, f"synthetic_{other}_holdout")}


def run_synthetic_protocols(seeds: Sequence[int], profile: str, root: str | os.PathLike, device: str = "cpu",
                            variant: str = "authors",
                            methods: Sequence[str] = METHOD_NAMES) -> dict[str, pd.DataFrame]:
    """protocol name -> the tidy results of ``methods`` under it (:func:`synthetic_protocols`), each run into
    ``<root>/<folder>``."""
    return {name: run_experiments(SYNTHETIC, list(methods), list(seeds), profile, Path(root) / folder, device=device,
                                  overrides=over, progress=False)
            for name, (over, folder) in synthetic_protocols(variant).items()}


@dataclass(frozen=True)
class Ablation:
    """One config ``field`` switched over ``levels`` for ``method`` on the synthetic data (authors' variant), the
    rest as the profile says; level ``v`` runs into ``<root>/<folder.format(v)>`` and is named in the results'
    column ``column``."""
    method: str
    field: str
    levels: tuple[Any, ...]
    column: str
    folder: str


ABLATIONS: dict[str, Ablation] = {
    "loss_form": Ablation("gradient", "loss_form", ("ce", "kl"), "loss_form", "synthetic_lossform_{}"),
    "clamp_extrapolation": Ablation("proposed", "clamp_extrapolation", (True, False), "clamped", "synthetic_clamp_{}"),
}


def run_ablation(name: str, seeds: Sequence[int], profile: str, root: str | os.PathLike,
                 device: str = "cpu") -> pd.DataFrame:
    """Run the ablation ``name`` of :data:`ABLATIONS`, one level after the other; the tidy results of all levels,
    the level in the ablation's ``column``."""
    if name not in ABLATIONS:
        raise ValueError(f"unknown ablation {name!r}; choose one of: {', '.join(ABLATIONS)}")
    a = ABLATIONS[name]
    frames = [run_experiments(SYNTHETIC, [a.method], list(seeds), profile, Path(root) / a.folder.format(level),
                              device=device, overrides={a.field: level, "variant": "authors"},
                              progress=False).assign(**{a.column: level})
              for level in a.levels]
    return pd.concat(frames, ignore_index=True)


__all__ = ["ATTRIBUTION_FACTORS", "ATTRIBUTION_CELLS", "ATTRIBUTION_SEEDS", "attribution_dir", "run_attribution",
           "BRANCHES_STARTS", "BRANCHES_VARIANTS", "BRANCHES_EPOCHS", "BRANCHES_PLAN", "branches_dir", "branches_overrides",
           "variant_of", "run_branches", "E1_E2_LEVELS", "e1_e2_grid", "run_e1_e2", "synthetic_protocols",
           "run_synthetic_protocols", "Ablation", "ABLATIONS", "run_ablation"]
