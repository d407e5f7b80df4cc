"""Transfer learning without paying for the frozen layers twice.

When a pretrained backbone is fine-tuned with its early layers frozen, those layers compute the
same function in every epoch. :mod:`kdcourse.transfer.views` computes a frozen trunk's output once
for every view (dihedral symmetry) of every training image and serves random views of it as
mini-batches; training the top of the network on these batches gives the same weights as training
the whole network with a frozen trunk on augmented images (tested), at the cost of the top alone.
:mod:`kdcourse.transfer.cache` keeps one network's views in a file, and
:mod:`kdcourse.transfer.two_phase` runs the usual recipe on them: *feature extraction* trains a new
head on pooled features, *fine-tuning* trains the top (later stages and head) on the trunk's maps at
a lower learning rate. :mod:`kdcourse.transfer.probe` is the reference a head should reach: a
linear probe (logistic regression, its strength chosen by cross-validation) on the same features.
"""

from kdcourse.transfer.probe import PROBE_CS, linear_probe
from kdcourse.transfer.cache import Views, compute_views, role_views
from kdcourse.transfer.two_phase import Trained, TwoPhaseRunner, TwoPhaseSettings
from kdcourse.transfer.views import ALL_VIEWS, VIEWS, ViewBatches, apply_in_batches, dihedral_view, trunk_views

__all__ = [
    "VIEWS", "ALL_VIEWS", "dihedral_view", "trunk_views", "apply_in_batches", "ViewBatches",
    "Views", "role_views", "compute_views",
    "TwoPhaseSettings", "Trained", "TwoPhaseRunner", "PROBE_CS", "linear_probe",
]
