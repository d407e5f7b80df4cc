"""Every study configuration is made by its ``config_for`` through
:func:`kdcourse.studies.common.with_overrides`, which checks it: seeds and field names."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable

import pytest

import kdcourse.studies
from kdcourse.studies import mhist, nuclear
from kdcourse.studies.tlkd import config as tlkd_config
from kdcourse.studies.common import check_seeds


def _config_makers() -> dict[str, Callable[..., object]]:
    """``config_for`` of every study module (found, not listed, so that a new study is checked too),
    with one entry per data set of the nuclear-norm study."""
    makers: dict[str, Callable[..., object]] = {}
    for info in pkgutil.walk_packages(kdcourse.studies.__path__, "kdcourse.studies."):
        module = importlib.import_module(info.name)
        if callable(getattr(module, "config_for", None)) and module.config_for.__module__ == info.name:
            makers[info.name.removeprefix("kdcourse.studies.")] = module.config_for
    makers["nuclear eurosat"] = lambda profile, **o: nuclear.config_for(profile, "eurosat", **o)
    return makers


MAKERS = _config_makers()
WITH_SEEDS = {name: make for name, make in MAKERS.items() if hasattr(make("smoke"), "seeds")}


def test_every_study_with_seeds_is_found() -> None:
    assert {"mnist_distillation", "mnist_takd", "mnist_eskd", "mnist_subclass", "nuclear", "nuclear eurosat", "mhist",
            "tlkd.config"} <= set(WITH_SEEDS)


@pytest.mark.parametrize("name", sorted(WITH_SEEDS))
@pytest.mark.parametrize("seeds", [(0, 0), [], (), 5, [1, 1], ("0",), (True,), (-1,), (0.5,)])
def test_impossible_seeds_are_refused_by_every_study(name: str, seeds: object) -> None:
    with pytest.raises(ValueError, match="seeds must be"):
        WITH_SEEDS[name]("smoke", seeds=seeds)


@pytest.mark.parametrize("name", sorted(WITH_SEEDS))
def test_seeds_given_as_a_list_become_a_tuple(name: str) -> None:
    config = WITH_SEEDS[name]("smoke", seeds=[3, 1])  # what a chapter gets from `kdcourse execute -p SEEDS=(3, 1)`
    assert config.seeds == (3, 1)
    hash(config)  # still a frozen, hashable configuration


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_a_misspelt_field_is_refused_with_the_fields(name: str) -> None:
    with pytest.raises(TypeError, match=r"no field seed\b.*its fields: .*batch_size"):
        MAKERS[name]("smoke", seed=(0, 1))


def test_the_studies_own_checks_use_the_same_seed_check() -> None:
    """MHIST and TL+KD also check a configuration built without config_for, with the same message."""
    with pytest.raises(ValueError, match="seeds must be"):
        mhist._check(mhist.MhistConfig(seeds=(0, 0)))
    with pytest.raises(ValueError, match="seeds must be"):
        tlkd_config.check(tlkd_config.TlkdConfig(seeds=5))  # type: ignore[arg-type]
    check_seeds((0, 7, 42))
