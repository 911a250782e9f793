"""kdlib: metaparameter optimization in knowledge distillation (Gorpinich, Bakhteev, Strijov).

Modules, one per concept: ``losses`` (L_train, L_val), ``metaparams`` (the box and the initial law),
``hypergrad`` (eq. 3 estimators), ``trajectory`` (eq. 4 / Algorithm 1), ``methods`` (the six strategies),
``train`` (one student run), ``runner`` (sweeps on disk), ``data``, ``models``, ``teachers``, ``plots``.
"""
__version__ = "0.1.0"
