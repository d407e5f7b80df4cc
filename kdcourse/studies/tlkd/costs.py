"""What a run of the TL+KD study costs: the images each network processes, by stage (times follow
from measured rates with :func:`kdcourse.costs.estimated_seconds`)."""

from __future__ import annotations

import time

import pandas as pd
import torch

from kdcourse import costs, hardware, provenance
from kdcourse import data as kd_data
from kdcourse.backbones import backbone
from kdcourse.studies.common import json_records
from kdcourse.studies.tlkd.config import PAIRS, VIEW_CODES, TlkdConfig, load_backbones, resize_images
from kdcourse.studies.tlkd.runner import OnImages, PreLogits
from kdcourse.transfer import apply_in_batches, linear_probe

__all__ = ["pass_counts", "measured_rates", "cost_record", "student_sizes", "study_rates"]


def pass_counts(config: TlkdConfig, train: int, val: int, test: int, shap_images: int = 200, shap_samples: int = 200,
                ) -> pd.DataFrame:
    """The images each network must process in a run of ``config`` on splits of these sizes, by stage.

    Columns: ``stage``, ``network`` (teacher or student), ``pass`` (``forward`` or ``forward+backward``) and
    ``images``. Training on cached features (heads, the thesis regime, the sweeps' students) costs next to
    nothing and is left out. The last
    stage, the thesis's recipe without caches (every epoch the teacher's forward and the whole student's
    forward and backward pass, ``max_epochs`` epochs per network), is there for comparison."""
    views = len(VIEW_CODES[PAIRS[config.pair].dataset])
    seeds = len(config.seeds)
    once = views * train + val + test
    networks = seeds * (1 + len(config.temperatures) * len(config.alphas))
    occluded = sum(sum(levels) for sweep, levels in config.sweeps if sweep in ("center_black", "quarter_black"))
    explained = 2 * len(config.regimes) * seeds * shap_images * shap_samples  # TL and TL+KD students
    rows = [("cached views", "teacher", "forward", once), ("cached views", "student", "forward", once),
            # the two-phase teacher trains its last stage only: counted as the whole network, an upper bound
            ("teacher fine-tuning", "teacher", "forward+backward", seeds * config.finetune_epochs * train),
            ("teacher logits on the training views", "teacher", "forward", seeds * views * train)]
    if "finetune" in config.regimes:
        rows.append(("fine-tuning regime (students)", "student", "forward+backward", networks * config.finetune_epochs * train))
    rows += [("occluded views of the sweeps", "teacher", "forward", round(seeds * occluded * views * train)),
             ("occluded views of the sweeps", "student", "forward", round(seeds * occluded * views * train)),
             ("SHAP maps", "student", "forward+backward", explained)]
    table = pd.DataFrame(rows, columns=["stage", "network", "pass", "images"])
    uncached = 2 * seeds * config.max_epochs * train  # TL and TL+KD, every epoch
    thesis = pd.DataFrame([("thesis recipe without caches, for comparison", "teacher", "forward", uncached),
                           ("thesis recipe without caches, for comparison", "student", "forward+backward", uncached)],
                          columns=table.columns)
    return pd.concat([table, thesis], ignore_index=True)


def measured_rates(device: torch.device) -> dict[str, float]:
    """Images per second of the thesis's networks at 224 px (random weights: the speed does not depend on
    them), by ``"<network> <pass>"``."""
    amp = hardware.autocast_dtype(device)
    batch = 64 if device.type == "cuda" else 8
    rates = {}
    for role, name in (("teacher", "vit_base_patch16_224"), ("student", "resnet18")):
        model = backbone(name, 10, weights=None).model.to(memory_format=hardware.CONV_MEMORY_FORMAT)
        for kind, backward in (("forward", False), ("forward+backward", True)):
            rates[f"{role} {kind}"] = costs.throughput(model, (3, 224, 224), batch_size=batch, backward=backward,
                                                       device=device, amp_dtype=amp)
    return rates


def cost_record(config: TlkdConfig, device: torch.device) -> dict:
    """Rates measured on ``device`` and the time per stage of ``config`` on CIFAR-10's splits
    (45,000 / 5,000 / 10,000 images), JSON-ready."""
    rates = measured_rates(device)
    counts = pass_counts(config, train=45_000, val=5_000, test=10_000)
    return {"device": provenance.device_description(), "rates": rates,
            "table": json_records(costs.estimated_seconds(counts, rates))}


def student_sizes(config: TlkdConfig, dataset: kd_data.ImageData, sizes: tuple[int, ...] = (64, 96, 128), images: int = 5000,
                  device: str | torch.device | None = None) -> pd.DataFrame:
    """What the student's image side trades: for each side in ``sizes``, the validation accuracy of a linear
    probe (:func:`kdcourse.transfer.linear_probe`) on the pretrained student's pooled features of ``images``
    training images (a stratified sample) resized to that side, and the student's throughput there (images
    per second, ``forward`` and ``forward+backward`` on batches of ``config.batch_size``). ``dataset`` as
    :func:`load_data` gives it (CIFAR-10 at 32 px). One row per side, with its ``seconds`` of measurement.
    ``device``: the GPU where there is one, else the CPU."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    amp = hardware.autocast_dtype(device, allowed=config.mixed_precision)
    net = load_backbones(config)["student"]
    features = OnImages(PreLogits(net.model).eval(), net.mean, net.std)
    sample = kd_data.stratified_split(dataset.train.y, min(images, len(dataset.train) - 1), 0)[1]
    train, val = dataset.train.subset(sample), dataset.val
    rows = []
    for size in sizes:
        start = time.perf_counter()
        pooled = [apply_in_batches(features, resize_images(split.x, size), batch_size=256, device=device, amp_dtype=amp)
                  for split in (train, val)]
        (scores,), strength = linear_probe(pooled[0], train.y, pooled[1], folds=3)
        accuracy = float((torch.from_numpy(scores).argmax(1) == val.y).float().mean())
        model = net.model.to(device=device, memory_format=hardware.CONV_MEMORY_FORMAT)
        rates = {kind: costs.throughput(model, (3, size, size), batch_size=config.batch_size, backward=backward,
                                        device=device, amp_dtype=amp) for kind, backward in (("forward", False),
                                                                                              ("forward+backward", True))}
        rows.append({"size": size, "probe_val_accuracy": accuracy, "probe_c": strength, **rates,
                     "seconds": time.perf_counter() - start})
    return pd.DataFrame(rows)


def study_rates(config: TlkdConfig, device: str | torch.device | None = None) -> dict[str, float]:
    """Images per second of the networks of ``config``'s pair on ``device`` at the sizes and batches they train
    with, by ``"<network> <pass>"`` (``forward``, ``forward+backward``): the student at ``config.size`` in
    batches of ``config.batch_size``; a teacher trained from scratch at 32 px in batches of
    ``config.teacher_batch_size``, a pretrained one at ``config.size``. Weights do not change the speed.
    ``device``: the GPU where there is one, else the CPU."""
    from kdcourse.models import AirbenchNet

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    amp = hardware.autocast_dtype(device, allowed=config.mixed_precision)
    pair = PAIRS[config.pair]
    # pretrained networks keep their BatchNorm frozen when they train, random weights or not
    networks = {"student": (backbone(pair.student, 10, weights=None, frozen_batchnorm=True).model, config.size,
                            config.batch_size)}
    if pair.pretrained_teacher:
        networks["teacher"] = (backbone(pair.teacher, 10, weights=None, frozen_batchnorm=True).model, config.size,
                               config.batch_size)
    else:
        networks["teacher"] = (AirbenchNet(10, tta=0), 32, config.teacher_batch_size)
    rates = {}
    for role, (model, size, batch) in networks.items():
        model = model.to(device=device, memory_format=hardware.CONV_MEMORY_FORMAT)
        for kind, backward in (("forward", False), ("forward+backward", True)):
            rates[f"{role} {kind}"] = costs.throughput(model, (3, size, size), batch_size=batch, backward=backward,
                                                       device=device, amp_dtype=amp)
    return rates
