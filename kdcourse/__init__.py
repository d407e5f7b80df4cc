"""kdcourse: knowledge distillation in PyTorch, the library behind the course book.

Modules, one concern each: ``data`` (loaders, splits, batches), ``models`` (networks), ``losses``
(distillation objectives), ``train`` (fit / evaluate), ``distill`` (teacher-logit caching, stacked
student grids), ``subclass`` (subclass distillation), ``chains`` (teacher assistants, early-stopped
teachers), ``lowrank`` (nuclear-norm penalty, SVD factorisation), ``metrics``, ``profiling`` (parameters, MACs, latency), ``explain`` (LIME),
``plots``, ``results`` (result files with provenance), ``profiles`` (smoke / full), ``findings``
(what a chapter presents: the live run, or in smoke the recorded full results), ``hardware``
(precision and memory layout chosen by what the device does natively), ``book``
(execute and build the book; the ``kdcourse`` command), ``studies`` (one per chapter).
"""

import torch as _torch

__version__ = "0.1.0"

# Flush denormal floats to zero, as TensorFlow does by default on x86. Late in training, tiny
# gradients and Adam moments become denormal and each operation on them takes a slow path: the
# MNIST student epochs ran twice as slow from the fourth epoch on. The setting is per thread and
# worker threads copy it when they start, so it must happen before the first parallel operation,
# which importing kdcourse first (as every chapter does) guarantees.
_torch.set_flush_denormal(True)
