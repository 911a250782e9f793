"""Resuming a killed run where it stopped: the loop's whole state at the end of every epoch, written atomically, and
restored so that the run goes on bit for bit as if it had never stopped (``tests/test_checkpoint.py``).

A long run (a paper-protocol CIFAR-10 run is an hour of one CPU core, a Fashion-MNIST hyperopt run six trainings)
outlives the process that started it. :class:`Checkpoints` names the files of one run's trainings (hyperopt
trains several, in an order fixed by the seed; the k-th training of a run resumes from file k);
:func:`kdlib.train.loop.run_loop` saves into its :class:`Checkpoint` after every epoch (epoch-counted runs only;
an iteration-counted run is small) and, on a restart, restores: the backend (student, optimizer, Tuner), the
global torch RNG, the per-run shuffle and augmentation generators, the position in D_val, the history rows and the
elapsed wall time. A finished training keeps its last checkpoint until its run's record is written (a hyperopt
trial is then not trained again).

A checkpoint written under another torch version, CPU kernel set or run settings is not used (a warning says why
and the training starts over): its continuation would not be the same computation.
"""
from __future__ import annotations

import dataclasses
import io
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from kdlib.fileio import atomic_write_bytes

FORMAT = 1
SUFFIX = ".pt"  # a run's k-th training: <record key>.<k>.pt


def _environment() -> dict[str, str]:
    """What must not change between the sittings of one run for its continuation to be the same computation."""
    return dict(torch=torch.__version__, cpu_capability=str(torch.backends.cpu.get_cpu_capability()))


@dataclass
class Checkpoints:
    """The checkpoint files of one run, ``<folder>/<name>.<k>.pt`` for its k-th training, and what they restored.

    ``restored_seconds``: the wall time of earlier sittings, over the trainings restored (add it to this sitting's
    own); ``resumed``: per restored training, ``{"training": k, "epoch": e, "commit": ...}`` (the first epoch this
    sitting runs, and the commit that wrote the checkpoint); ``sittings``: ``[start, end, commit]`` of every earlier
    sitting of the restored trainings (Unix times: when they ran, for :func:`kdlib.analysis.archive.column_timing`;
    the commit that ran them)."""

    folder: Path
    name: str
    commit: str | None = None
    started: int = 0
    restored_seconds: float = 0.0
    resumed: list[dict[str, Any]] = field(default_factory=list)
    sittings: list[list[Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)

    def next(self) -> "Checkpoint":
        """The checkpoint of this run's next training."""
        ck = Checkpoint(self.folder / f"{self.name}.{self.started}{SUFFIX}", self, self.started)
        self.started += 1
        return ck

    def files(self) -> list[Path]:
        return sorted(self.folder.glob(f"{self.name}.*{SUFFIX}"))

    def clear(self) -> None:
        """Delete this run's checkpoint files (once its record is written)."""
        for path in self.files():
            path.unlink(missing_ok=True)


@dataclass
class Checkpoint:
    """One training's checkpoint file. ``owner`` (if any) collects what was restored."""

    path: Path
    owner: Checkpoints | None = None
    index: int = 0
    earlier: list[list[Any]] = field(default_factory=list)  # the restored state's sittings, [start, end, commit]
    start: float = field(default_factory=time.time)  # when this sitting of the training began

    def load(self, settings: Any) -> dict[str, Any] | None:
        """The saved loop state for ``settings``, or None (no file, or one that does not continue this run).
        Called as the training starts (this sitting's clock starts here)."""
        self.start, self.earlier = time.time(), []
        if not self.path.exists():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=False)
        except Exception as e:  # a torn or foreign file: the run starts over
            warnings.warn(f"checkpoint {self.path} could not be read ({type(e).__name__}: {e}); the training starts "
                          f"over", stacklevel=3)
            return None
        why = None
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            why = f"format {state.get('format') if isinstance(state, dict) else '?'} is not {FORMAT}"
        elif state["environment"] != _environment():
            why = f"written under {state['environment']}, this process is {_environment()}"
        elif (saved := _with_defaults(state["settings"], settings)) != (mine := dataclasses.asdict(settings)):
            diff = sorted(k for k, v in mine.items() if saved.get(k) != v)
            why = f"written for other settings (differing: {diff})"
        if why:
            warnings.warn(f"checkpoint {self.path} is not used: {why}; the training starts over", stacklevel=3)
            return None
        if "sittings" in state:
            self.earlier = [[s[0], s[1], s[2] if len(s) > 2 else state["commit"]] for s in state["sittings"]]
        else:  # a checkpoint of da77fd3 (before sittings were saved): its elapsed time, ending when it was written
            end = self.path.stat().st_mtime
            self.earlier = [[end - float(state["elapsed"]), end, state["commit"]]]
        if self.owner is not None:
            self.owner.restored_seconds += float(state["elapsed"])
            self.owner.resumed.append(dict(training=self.index, epoch=int(state["epoch"]), commit=state["commit"]))
            self.owner.sittings.extend(self.earlier)
        return state

    def save(self, settings: Any, **state: Any) -> None:
        """Write the loop state ``state`` for ``settings`` atomically (a killed write leaves the previous file)."""
        payload_commit = None if self.owner is None else self.owner.commit
        payload = dict(state, format=FORMAT, environment=_environment(), settings=dataclasses.asdict(settings),
                       commit=payload_commit,
                       sittings=[*self.earlier, [self.start, time.time(), payload_commit]])
        buf = io.BytesIO()
        torch.save(payload, buf)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.path, buf.getvalue())


def _with_defaults(saved: dict[str, Any], settings: Any) -> dict[str, Any]:
    """The saved settings dict with the fields it predates at their defaults: a field added to the settings later
    (as ``augment_val``) does not refuse a checkpoint written before it, unless this run sets it otherwise."""
    defaults = {f.name: f.default for f in dataclasses.fields(settings) if f.default is not dataclasses.MISSING}
    return {**defaults, **saved}


def peek(path: str | Path) -> dict[str, Any]:
    """Where the training of a checkpoint file stands, for a progress report: ``seed``, ``epoch`` (epochs done),
    ``epochs`` (of the run) and ``training`` (k of ``<record key>.<k>.pt``). Raises if the file cannot be read."""
    path = Path(path)
    state = torch.load(path, map_location="cpu", weights_only=False)
    return dict(seed=int(state["settings"]["seed"]), epoch=int(state["epoch"]),
                epochs=int(state["settings"]["epochs"]), training=int(path.name[:-len(SUFFIX)].rsplit(".", 1)[1]))


__all__ = ["Checkpoint", "Checkpoints", "peek"]
