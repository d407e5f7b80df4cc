"""kdcourse: knowledge distillation in PyTorch, the library behind the course book.

The KD library, one concern per module:

- ``data``: MNIST, EuroSAT, CIFAR-10 and MHIST as in-memory tensors (one module each), splits, batches.
- ``models``: the MNIST teacher, student and assistant networks; the airbench CIFAR-10 network.
- ``cifar_teacher``: that network trained from scratch in about ten epochs (the airbench94 recipe).
- ``backbones``: ImageNet backbones (timm or the offline MobileNets) with a new head, frozen BatchNorm.
- ``kd``: distillation methods behind one interface (Hinton, subclass, FitNets, attention transfer),
  cached teacher outputs, stacked students, assistant chains, early-stopped teachers, ensemble teachers.
- ``train``: ``fit``, the one training loop, with ``evaluate`` and ``predict_logits``.
- ``optim``: the optimisers and learning-rate schedules of ``fit``.
- ``checkpoints``: fingerprints, guarded loading and saving, one process per run.
- ``provenance``: the commit, device and date of a run and the training of its networks.
- ``transfer``: cached trunk views of every image, two-phase transfer learning, a linear probe.
- ``lowrank``: the nuclear-norm penalty and truncated-SVD factorisation.
- ``stats``: the one rule that decides whether a difference is an effect (and the joint rule of seeds and images).
- ``metrics``: accuracy, precision/recall/F1, confusion matrices, AUC.
- ``costs``: parameters, MACs, latency, throughput and time estimates.
- ``explain``: LIME and SHAP maps, foreground masks and shares.
- ``corruptions``: the robustness sweeps' corruptions of images and labels.
- ``hardware``: precision and memory layout chosen by what the device does natively.
- ``paths``: where data, weights and runs are looked for.

The course machinery (``kdcourse.course``: executing and building the book, the ``kdcourse`` command,
results, findings, tables, plots, timings) and one study per chapter (``kdcourse.studies``) build on it.
"""

import torch as _torch

__version__ = "0.1.0"

# Flush denormal floats to zero, as TensorFlow does by default on x86. Late in training, tiny
# gradients and Adam moments become denormal and each operation on them takes a slow path: the
# MNIST student epochs ran twice as slow from the fourth epoch on. The setting is per thread and
# worker threads copy it when they start, so it must happen before the first parallel operation,
# which importing kdcourse first (as every chapter does) guarantees.
_torch.set_flush_denormal(True)
