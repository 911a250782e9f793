"""Training students: the one loop and its backends.

- :mod:`~kdlib.train.settings`: the run settings, the student's optimizer, the Tuner and the schedule built from them;
- :mod:`~kdlib.train.problem`: what a run trains on (train part with teacher logits, D_val, test set);
- :mod:`~kdlib.train.loop`: the one loop (:func:`run_loop`) and the backend interface;
- :mod:`~kdlib.train.one_by_one`: the reference backend, one student and its Tuner (:func:`train_student`);
- :mod:`~kdlib.train.stacked`: S runs as one vmapped model; :mod:`~kdlib.train.stacked_graph`: its step captured
  into CUDA graphs; :mod:`~kdlib.train.linear`: S logistic regressions in closed form (the synthetic column);
- :mod:`~kdlib.train.together`: hyperopt's trials of several seeds trained together on a stacking backend;
- :mod:`~kdlib.train.select`: which backend trains a group of runs, and why (:func:`select_backend`).
"""
from __future__ import annotations

from kdlib.train.loop import Backend, RunOutput, evaluates_after, run_loop, single_thread
from kdlib.train.one_by_one import OneRun, TunerFactory, evaluate, train_student
from kdlib.train.problem import Problem, Split
from kdlib.train.select import BACKENDS, Choice, select_backend, train_students_stacked
from kdlib.train.settings import OPTIMIZERS, Settings, make_optimizer, make_schedule, make_tuner
from kdlib.train.together import search_together

__all__ = ["Backend", "RunOutput", "evaluates_after", "run_loop", "single_thread", "OneRun", "TunerFactory",
           "evaluate", "train_student", "Problem", "Split", "BACKENDS", "Choice", "select_backend",
           "train_students_stacked", "OPTIMIZERS", "Settings", "make_optimizer", "make_schedule", "make_tuner",
           "search_together"]
