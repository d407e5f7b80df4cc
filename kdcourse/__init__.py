"""kdcourse: knowledge distillation in PyTorch, the library behind the course book.

Modules, one concern each: ``data`` (loaders, splits, batches), ``models`` (networks), ``losses``
(distillation objectives), ``train`` (fit / evaluate), ``distill`` (teacher-logit caching, stacked
student grids), ``metrics``, ``profiling`` (parameters, MACs, latency), ``explain`` (LIME),
``plots``, ``results`` (result files with provenance), ``profiles`` (smoke / full), ``book``
(execute and build the book; the ``kdcourse`` command), ``studies`` (one per chapter).
"""

__version__ = "0.1.0"
