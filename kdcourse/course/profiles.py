"""Run profiles: the same chapter at two scales.

``smoke`` runs on a CPU in seconds to a minute on a few hundred samples; its numbers mean
nothing. ``full`` is the real study. A chapter's ``parameters`` cell sets ``PROFILE`` (papermill
can override it); when it is ``None`` the ``KDCOURSE_PROFILE`` environment variable decides
(nbval cannot pass parameters), and without that the default is ``smoke``.
"""

from __future__ import annotations

import os

__all__ = ["PROFILES", "PROFILE_ENV", "resolve_profile", "smoke_banner"]

PROFILES = ("smoke", "full")
PROFILE_ENV = "KDCOURSE_PROFILE"


def resolve_profile(profile: str | None = None) -> str:
    """``profile`` if given, else ``$KDCOURSE_PROFILE``, else ``"smoke"``; must be one of :data:`PROFILES`."""
    name = profile or os.environ.get(PROFILE_ENV) or "smoke"
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {PROFILES} (argument or ${PROFILE_ENV})")
    return name


def smoke_banner(profile: str) -> str:
    """Lines to print at the top of a chapter run: the profile (warning when its numbers are not
    meaningful) and the precision :mod:`kdcourse.hardware` chose for the training device."""
    import torch

    from kdcourse import hardware

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return f"{_profile_line(profile)}\n{hardware.precision_summary(device)} on {device}"


def _profile_line(profile: str) -> str:
    if profile == "smoke":
        return (
            "SMOKE PROFILE: a few hundred samples and one or two epochs, to check that the chapter runs. "
            "Outputs labelled 'Smoke run' are not results; the findings shown come from the recorded "
            "full-profile results (appendix). Set PROFILE = \"full\" in the first code cell to run the real study."
        )
    return "FULL PROFILE: the complete study."
