"""The one place for the names kdlib accepts and shows: datasets, methods, estimators, profiles, labels.

Everything that validates a name or prints one imports it from here, so a name is spelled once.
"""
from __future__ import annotations

# the datasets of Sec. 4: the synthetic problem (4.1) and the image datasets (4.2)
IMAGE_DATASETS: tuple[str, ...] = ("fashion_mnist", "cifar10_reduced", "cifar10")
DATASETS: tuple[str, ...] = ("synthetic",) + IMAGE_DATASETS
# the six methods of the paper, in the order of Table 2
METHOD_NAMES: tuple[str, ...] = ("no_distillation", "naive", "random", "gradient", "hyperopt", "proposed")
# beyond the paper: 2023-24 adaptive-temperature distillation and the paper's tuning on standardised logits
BEYOND_METHOD_NAMES: tuple[str, ...] = ("ctkd", "logit_std", "gradient_std")
# every method kdlib registers itself (kdlib.methods.METHODS adds any a user registers)
ALL_METHOD_NAMES: tuple[str, ...] = METHOD_NAMES + BEYOND_METHOD_NAMES
# hypergradient estimators of eq. (3)
ESTIMATORS: tuple[str, ...] = ("unrolled", "finite_difference", "neumann", "forward")
# experiment scales (kdlib.experiments.profiles)
PROFILES: tuple[str, ...] = ("smoke", "quick", "paper")
# the student's optimizer (contract 1): the paper uses plain SGD
OPTIMIZERS: tuple[str, ...] = ("sgd", "adam", "adamw")
# run-record statuses (kdlib.experiments.store)
STATUSES: tuple[str, ...] = ("ok", "diverged")

# the choices of the run settings (kdlib.train.settings) and the experiment config (kdlib.experiments.config)
# metaparameter schedules (kdlib.schedules): fixed values, eq. 3 every iteration, Algorithm 1
SCHEDULES: tuple[str, ...] = ("fixed", "gradient", "proposed")
# Algorithm 1's cycle counts global iterations or restarts every epoch (the authors' code)
PROPOSED_RESETS: tuple[str, ...] = ("global", "epoch")
# eq. 3's step on T itself (the paper) or on log T
TEMPERATURE_PARAMS: tuple[str, ...] = ("linear", "log")
# the finite-difference estimator's virtual step at the current or the initial lr
FD_VIRTUAL_LRS: tuple[str, ...] = ("current", "initial")
# initial (lambda1, T) of the tuning methods, and the random baseline's law (kdlib.metaparams)
INIT_LAWS: tuple[str, ...] = ("uniform", "authors")
RANDOM_LAWS: tuple[str, ...] = ("uniform", "loguniform", "authors")
# the distillation term: cross-entropy (the paper) or KL divergence (the authors' code); kdlib.losses adds the
# standardised-logit forms "<form>_std" (gradient_std)
LOSS_FORMS: tuple[str, ...] = ("ce", "kl")
# the synthetic problem's variant (kdlib.data.synthetic)
VARIANTS: tuple[str, ...] = ("paper", "authors")
# where kdlib.Tuner.step sits in the loop: before the forward (the paper) or after loss.backward(), reusing .grad
PLACEMENTS: tuple[str, ...] = ("before_backward", "after_backward")
# training-time augmentation of image batches: none, or the authors' use_aug=True (flip + padded crop,
# kdlib.data.augment)
AUGMENTS: tuple[str, ...] = ("none", "flip_crop")
# how the seeds of one image method train: each on its own, as one vmapped model, or as one vmapped model whose
# step is captured into CUDA graphs (kdlib.train.select)
ENGINES: tuple[str, ...] = ("one", "stacked", "stacked_graph")

METHOD_LABELS: dict[str, str] = {"no_distillation": "Without distillation", "naive": "Naive", "random": "Random",
                                 "gradient": "Gradient-based", "hyperopt": "Hyperopt", "proposed": "Proposed",
                                 "ctkd": "CTKD (curriculum temperature)", "logit_std": "Logit standardisation",
                                 "gradient_std": "Gradient-based on standardised logits"}
DATASET_LABELS: dict[str, str] = {"synthetic": "Synthetic", "fashion_mnist": "Fashion-MNIST",
                                  "cifar10_reduced": "Reduced CIFAR-10", "cifar10": "CIFAR-10"}
ESTIMATOR_LABELS: dict[str, str] = {"unrolled": "unrolled (reverse mode)", "finite_difference": "finite difference",
                                    "neumann": "Neumann series", "forward": "forward mode"}

__all__ = ["IMAGE_DATASETS", "DATASETS", "METHOD_NAMES", "BEYOND_METHOD_NAMES", "ALL_METHOD_NAMES", "ESTIMATORS", "PROFILES", "OPTIMIZERS", "STATUSES",
           "SCHEDULES", "PROPOSED_RESETS", "TEMPERATURE_PARAMS", "FD_VIRTUAL_LRS", "INIT_LAWS", "RANDOM_LAWS",
           "LOSS_FORMS", "PLACEMENTS", "AUGMENTS", "VARIANTS", "ENGINES", "METHOD_LABELS", "DATASET_LABELS", "ESTIMATOR_LABELS"]

# teacher kinds (kdlib.teachers); a user's own logits are given as "file:PATH.npy"
AUTHORS_TEACHERS: tuple[str, ...] = ("authors_resnet", "authors_cnn", "authors_resnet_fmnist")
TRAINED_TEACHERS: tuple[str, ...] = ("small_cnn", "resnet18", "logreg")
TEACHER_KINDS: tuple[str, ...] = ("auto",) + AUTHORS_TEACHERS + TRAINED_TEACHERS
__all__ += ["AUTHORS_TEACHERS", "TRAINED_TEACHERS", "TEACHER_KINDS"]
