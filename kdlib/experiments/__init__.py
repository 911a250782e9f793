"""The experiment layer: from a named grid to trustworthy records on disk.

Modules, imports pointing down:

* :mod:`~kdlib.experiments.config`: :class:`ExperimentConfig`, the schema of one run, and its validation;
* :mod:`~kdlib.experiments.profiles`: the paper's protocol per dataset, the profiles, ``resolve_config``;
* :mod:`~kdlib.experiments.protocol`: the authors' protocol (``authors_protocol``) and where the archive of
  paper-protocol runs lives (``archive_root``, ``archive_dir``, ``pending_dir``);
* :mod:`~kdlib.experiments.problem`: data bundle + verified teacher -> the splits a method trains on;
* :mod:`~kdlib.experiments.store`: the config-keyed run store (keys, records, readers, aggregation);
* :mod:`~kdlib.experiments.executors`: local worker processes and submitit (SLURM) job arrays;
* :mod:`~kdlib.experiments.runner`: ``run_one``, ``run_experiments``, ``fixed_grid``;
* :mod:`~kdlib.experiments.sweeps`: named sweeps on top of the runner: the grids of the book's pages (Fig. 6's
  ``run_e1_e2``, the synthetic data protocols, notebook 09's ``run_ablation``, ``run_branches``: why the branches?,
  ``run_attribution``: which knob?).

This ``__init__`` imports nothing, so that the lower layers (``kdlib.train``, ``kdlib.methods``) may import
``kdlib.experiments.config`` without pulling in the runner.
"""
