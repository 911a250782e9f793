"""kdlib.experiments.config/profiles: the schema (contract 1 fields and defaults), types and ranges of every
field, canonical values, reserved names."""
from __future__ import annotations

import dataclasses

import pytest

from kdlib.errors import ConfigError
from kdlib.experiments.config import ExperimentConfig, validate
from kdlib.experiments.profiles import PAPER_PROTOCOL, PROFILE_SPECS, profile_seeds, resolve_config
from kdlib.names import DATASETS, METHOD_NAMES


def test_contract_fields_and_defaults():
    defaults = {f.name: f.default for f in dataclasses.fields(ExperimentConfig)}
    assert {k: defaults[k] for k in ("optimizer", "momentum", "nesterov", "weight_decay", "betas", "init_law",
                                     "fd_virtual_lr")} == dict(optimizer="sgd", momentum=0.0, nesterov=False,
                                                               weight_decay=0.0, betas=(0.9, 0.999),
                                                               init_law="uniform", fd_virtual_lr="current")


def test_every_profile_and_dataset_resolves_for_every_method():
    for profile in PROFILE_SPECS:
        for ds in DATASETS:
            assert set(PAPER_PROTOCOL[ds]) <= {f.name for f in dataclasses.fields(ExperimentConfig)}
            for m in METHOD_NAMES:
                resolve_config(ds, m, profile, 0)
            assert profile_seeds(profile, ds) >= 1


@pytest.mark.parametrize("field, bad", [
    ("iterations", 0), ("iterations", 2.0), ("iterations", True), ("epochs", -1), ("batch_size", 0),
    ("log_every", 0), ("hyperopt_evals", 0), ("unroll_steps", 0), ("e1", 1), ("e2", -1), ("e2", 2.5),
    ("teacher_epochs", 0), ("n_test", 0), ("split_seed", -1), ("lr", 0), ("lr", "abc"), ("lr", float("nan")),
    ("meta_lr", -0.1), ("meta_clip", -1), ("meta_clip", 0), ("t_val", 0), ("lr_gamma", 0), ("momentum", 1.0),
    ("weight_decay", -1e-4), ("betas", (0.9,)), ("betas", (0.9, 1.5)), ("optimizer", "rmsprop"),
    ("init_law", "gauss"), ("fd_virtual_lr", "later"), ("shuffle", "yes"), ("holdout", 1),
    ("teacher", "gpt"), ("teacher", "file:"), ("extra", []),
])
def test_bad_values_name_field_expected_found_and_fix(field, bad):
    with pytest.raises(ConfigError) as e:
        resolve_config("synthetic", "gradient", "smoke", 0, **{field: bad})
    msg = str(e.value)
    assert field in msg and ("fix" in msg or "choose one of" in msg), msg


def test_numbers_are_canonical():
    a = resolve_config("synthetic", "gradient", "smoke", 0, lr=1, betas=[0.9, 0.999])
    b = resolve_config("synthetic", "gradient", "smoke", 0, lr=1.0)
    assert a.lr == 1.0 and isinstance(a.lr, float) and a.betas == (0.9, 0.999) and a.to_dict() == b.to_dict()
    assert ExperimentConfig.from_dict(a.to_dict()) == a


def test_registered_method_names_are_accepted_when_passed():
    cfg = ExperimentConfig(dataset="synthetic", method="mine", iterations=10)
    with pytest.raises(ConfigError, match="unknown method 'mine'"):
        validate(cfg)
    validate(cfg, known_methods=METHOD_NAMES + ("mine",))


def test_sgd_only_options_are_checked():
    resolve_config("synthetic", "gradient", "smoke", 0, momentum=0.9, nesterov=True)
    with pytest.raises(ConfigError, match="sgd"):
        resolve_config("synthetic", "gradient", "smoke", 0, optimizer="adam", momentum=0.9)
    with pytest.raises(ConfigError, match="nesterov"):
        resolve_config("synthetic", "gradient", "smoke", 0, nesterov=True)


def test_temperature_param_is_validated_and_keys_only_when_not_default():
    from kdlib.experiments.store import config_hash

    with pytest.raises(ConfigError, match="temperature_param"):
        resolve_config("synthetic", "gradient", "smoke", 0, temperature_param="exp")
    lin = resolve_config("synthetic", "gradient", "smoke", 0)
    log = resolve_config("synthetic", "gradient", "smoke", 0, temperature_param="log")
    assert lin.temperature_param == "linear"
    # a record written before the field existed (no temperature_param in its config) keeps its key
    old = {k: v for k, v in lin.to_dict().items() if k != "temperature_param"}
    assert config_hash(old, 1) == config_hash(lin, 1) != config_hash(log, 1)


def test_tf32_is_validated_keyed_only_when_on_and_applied_only_inside_its_block():
    """The TF32 setting (kdlib.precision): a bool, CUDA only (a clear error on the CPU), keyed only when True (the
    records made before it keep their keys); its block sets both flags and restores the process's after."""
    import torch

    from kdlib import precision
    from kdlib.experiments.store import config_hash

    with pytest.raises(ConfigError, match="'tf32'.*--device cuda"):
        resolve_config("synthetic", "gradient", "smoke", 0, tf32=True)
    with pytest.raises(ConfigError, match="tf32"):
        resolve_config("synthetic", "gradient", "smoke", 0, tf32="yes")
    cuda = resolve_config("fashion_mnist", "gradient", "smoke", 0, device="cuda", tf32=True)
    off = resolve_config("fashion_mnist", "gradient", "smoke", 0, device="cuda")
    assert off.tf32 is False
    old = {k: v for k, v in off.to_dict().items() if k != "tf32"}  # a record written before the field
    assert config_hash(old, 1) == config_hash(off, 1) != config_hash(cuda, 1)
    graph = resolve_config("fashion_mnist", "gradient", "smoke", 0, device="cuda", engine="stacked_graph")
    assert config_hash(graph, 1) not in (config_hash(off, 1), config_hash(old, 1))
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    try:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = True, False  # torch's defaults
        with precision.tf32(False, "cpu"):
            assert precision.flags() == dict(tf32_cudnn=False, tf32_matmul=False)
        with precision.tf32(True, "cuda:0"):
            assert precision.flags() == dict(tf32_cudnn=True, tf32_matmul=True)
        assert precision.flags() == dict(tf32_cudnn=True, tf32_matmul=False)
        with pytest.raises(ConfigError, match="tf32"):
            with precision.tf32(True, "cpu"):
                pass
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
