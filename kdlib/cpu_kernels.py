"""Pinned CPU kernels: the switch that lets a float32 CPU run regenerate bit for bit on another x86-64 host.

torch picks its CPU kernels by the host's instruction set: ATen's vectorised kernels (``ATEN_CPU_CAPABILITY``),
oneDNN's convolutions (``ONEDNN_MAX_CPU_ISA``) and MKL's BLAS (``MKL_CBWR``). Kernels of another vector width
sum in another order, so two hosts round differently from the first step, and at the paper's lr 1.0 the
student's accuracy after one epoch can differ by points. A *pin* caps all three at one instruction set that
every host of a kind has, so a host with wider vectors computes what a host with exactly that set computes, as
long as both are of one CPU vendor and model: under the AVX2 pin an AMD EPYC and an Intel Xeon still round a
convolutional student differently (0.011 in accuracy after one reduced CIFAR-10 epoch), which is why records
also name their CPU (``provenance.cpu_model``) and a re-check is strict only on that model.

``avx2`` is the pin: AVX2 is on every x86-64 server CPU of the last decade. The libraries read the variables
once, when torch first computes, so a pin takes effect only in a new process: set ``KDLIB_CPU_KERNELS=avx2``
and the variables of :func:`pin_environment` before Python starts, or pass ``--cpu-kernels avx2`` to
``python -m kdlib run``, which re-starts the command under it. :func:`in_effect` says which pin a process
computes under (and refuses a pin that was asked for but did not take effect); records store it in
``provenance.cpu_kernels``. Not pinned is ``"native"``: the host's own kernels.
"""
from __future__ import annotations

import os
from typing import Mapping

import torch

from kdlib.errors import KdlibError

ENV = "KDLIB_CPU_KERNELS"
NATIVE = "native"
# the library variables of each pin, and what torch.backends.cpu.get_cpu_capability() reports under it
PINS: dict[str, dict[str, str]] = {
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"},
}
CAPABILITY: dict[str, str] = {"avx2": "AVX2"}
# the native torch capabilities of a host that offers each pin
OFFERED_BY: dict[str, tuple[str, ...]] = {"avx2": ("AVX2", "AVX512")}
CHOICES = (NATIVE, *PINS)


class PinError(KdlibError, RuntimeError):
    """A pin was asked for but this process does not compute under it."""


def check_name(name: str) -> str:
    """``name`` if it is a pin or ``"native"``; else ``ValueError`` naming the choices."""
    if name not in CHOICES:
        raise ValueError(f"CPU kernels {name!r}: expected one of {', '.join(CHOICES)}")
    return name


def pin_environment(name: str) -> dict[str, str]:
    """The environment variables that put a new process under pin ``name`` (``{}`` for ``"native"``)."""
    if check_name(name) == NATIVE:
        return {}
    return {ENV: name, **PINS[name]}


def environment_for(name: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with pin ``name`` set; ``"native"`` removes every pin
    variable, so that a child computes with its host's own kernels."""
    env = dict(os.environ if base is None else base)
    for var in {ENV, *(v for pin in PINS.values() for v in pin)}:
        env.pop(var, None)
    env.update(pin_environment(name))
    return env


def requested() -> str:
    """The pin this process was asked to compute under (``$KDLIB_CPU_KERNELS``, default ``"native"``)."""
    name = os.environ.get(ENV, NATIVE) or NATIVE
    try:
        return check_name(name)
    except ValueError as err:
        raise PinError(f"${ENV}: {err}; fix: unset it or set one of {', '.join(CHOICES)}") from None


def _unset(name: str) -> dict[str, str]:
    """The variables of pin ``name`` (with their values) that this process's environment does not carry."""
    return {k: v for k, v in pin_environment(name).items() if os.environ.get(k) != v}


def needs_restart(name: str) -> bool:
    """Whether this process must be re-started to compute under pin ``name``: its environment does not carry the
    pin's variables (or, for ``"native"``, carries a pin)."""
    if check_name(name) == NATIVE:
        return requested() != NATIVE
    return bool(_unset(name))


def host_offers(name: str) -> bool:
    """Whether this host can compute under pin ``name`` (from the capability torch reports in this process)."""
    if check_name(name) == NATIVE:
        return True
    return str(torch.backends.cpu.get_cpu_capability()) in OFFERED_BY[name]


def in_effect() -> str:
    """The pin this process computes under: ``"native"``, or a pin whose variables were all set when the process
    started and whose capability torch reports. Raises :class:`PinError` when ``$KDLIB_CPU_KERNELS`` asks for a
    pin that did not take effect (its variables missing, or a CPU without that instruction set), so that no
    record claims kernels it was not made with."""
    name = requested()
    if name == NATIVE:
        return NATIVE
    missing = _unset(name)  # $KDLIB_CPU_KERNELS itself is set: requested() read it
    if missing:
        raise PinError(f"${ENV}={name} but {', '.join(f'{k}={v}' for k, v in missing.items())} not set in this "
                       f"process; the libraries read them at start-up; fix: start it with all of "
                       f"{pin_environment(name)}, or use `python -m kdlib run --cpu-kernels {name}`")
    have = str(torch.backends.cpu.get_cpu_capability())
    if have != CAPABILITY[name]:
        raise PinError(f"${ENV}={name} but torch computes with {have} kernels: this CPU does not offer "
                       f"{CAPABILITY[name]} (or the variables were set after torch first computed); fix: run "
                       f"pinned records on an x86-64 host with {CAPABILITY[name]}")
    return name


def of_record(record: Mapping[str, object]) -> tuple[str, str | None]:
    """(pin, torch CPU capability) a run record was made with, from its provenance (records made before pins
    were recorded: ``"native"``, and a capability of None when that is not recorded either)."""
    prov = record.get("provenance") or {}
    assert isinstance(prov, Mapping)
    cap = prov.get("cpu_capability")
    return str(prov.get("cpu_kernels", NATIVE)), None if cap is None else str(cap)


__all__ = ["ENV", "NATIVE", "PINS", "CAPABILITY", "OFFERED_BY", "CHOICES", "PinError", "check_name", "pin_environment",
           "environment_for", "requested", "needs_restart", "host_offers", "in_effect", "of_record"]
