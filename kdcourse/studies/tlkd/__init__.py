"""TL+KD: does distillation still help a student that already starts from ImageNet weights?

The question of the thesis among the source documents (a ViT-B/16 teacher and a ResNet-18 student on
CIFAR-10), asked here with the same code on a pretrained student, a teacher from ImageNet backbones or
trained from scratch, and a data set of uint8 images. The teacher is trained first; the student is then trained with labels only (*TL*) and with
the teacher's soft targets added (*TL+KD*), in two regimes:

- ``thesis``: the student's backbone frozen, a new head trained on its pooled features with the
  thesis's recipe (SGD with momentum 0.9, weight decay 5e-4, learning rate 0.01, batches of 64, the
  rate cut tenfold on a validation plateau, early stopping);
- ``finetune``: what a practitioner would do: the head on pooled features first, then every layer on
  augmented images at a small learning rate (AdamW, cosine schedule).

TL+KD runs at the thesis's (T = 10, α = 0.1) and at the (T, α) of the best mean validation accuracy
on a grid. Every arm of a seed starts from the same head initialisation and sees the same batches.
The robustness sweeps (less data, noisy labels, CenterBlack and QuarterBlack occlusions of a fraction
of the training images) run in the thesis regime; the teacher sees the same, occluded, images as the
student, and for the sweeps in ``retrained_sweeps`` (fewer images, noisy labels) it is trained again on
the student's own training set, so that it knows no labels the student lacks. The recorded CIFAR-10
study on a CPU (pair ``cifar10_cpu``) has a teacher trained from scratch at 32 px
(:mod:`kdcourse.cifar_teacher`) and an ImageNet MobileNet student on upsampled images. Model selection and early stopping use a validation split; the test split
is only evaluated.

:func:`mnist_foreground` is the interpretability question where the foreground is known exactly:
the share of positive SHAP mass on the stroke pixels of MNIST digits, for the teacher, the KD
student and the scratch student of the MNIST distillation chapter.

The modules, by concern: :mod:`~kdcourse.studies.tlkd.config` (pairs, configuration, profiles, data
and networks), :mod:`~kdcourse.studies.tlkd.runner` (every network of a run and its record),
:mod:`~kdcourse.studies.tlkd.tables` (effects and tables), :mod:`~kdcourse.studies.tlkd.foreground`
(SHAP foreground shares), :mod:`~kdcourse.studies.tlkd.costs` (images per network and stage), and
the chapter's :mod:`~kdcourse.studies.tlkd.report` (tables, sentences, records) and
:mod:`~kdcourse.studies.tlkd.figures`.
"""

from kdcourse.costs import estimated_seconds
from kdcourse.studies.tlkd.config import (
    ARM_LABELS,
    ARMS,
    CLASSES,
    PAIRS,
    PROFILES,
    REGIMES,
    SWEEPS,
    Pair,
    TlkdConfig,
    at_size,
    cifar_for,
    config_for,
    load_backbones,
    load_data,
)
from kdcourse.studies.tlkd.costs import pass_counts, student_sizes, study_rates
from kdcourse.studies.tlkd.foreground import (
    FOREGROUND_COMPARISONS,
    ForegroundOutcome,
    foreground_effects,
    image_foreground,
    ObjectImages,
    PhotoForeground,
    mnist_foreground,
    object_images,
    photo_foreground,
    shap_record,
    student_foreground,
)
from kdcourse.studies.tlkd.runner import (
    OnImages,
    PreLogits,
    TlkdOutcome,
    outcome_record,
    run_study,
)
from kdcourse.studies.tlkd.tables import (
    arm_scores,
    effects_table,
    epochs_to_reach,
    speed_table,
    sweep_table,
    true_positive_change,
)

__all__ = [
    "Pair", "PAIRS", "CLASSES", "REGIMES", "SWEEPS", "ARMS", "ARM_LABELS", "TlkdConfig", "PROFILES", "config_for",
    "load_backbones", "load_data", "cifar_for", "at_size", "OnImages", "PreLogits", "TlkdOutcome", "run_study", "outcome_record",
    "arm_scores", "effects_table", "epochs_to_reach", "speed_table", "sweep_table", "true_positive_change",
    "ForegroundOutcome", "mnist_foreground", "image_foreground", "FOREGROUND_COMPARISONS", "foreground_effects",
    "shap_record", "student_foreground", "ObjectImages", "object_images", "PhotoForeground", "photo_foreground",
    "pass_counts", "student_sizes", "study_rates", "estimated_seconds",
]
