"""Backbones: weights from exactly the place asked for, normalisation from the weights, freezing, splitting.

The offline weight files are written here in their real format (a state dict of the real
architecture, as ``torch.save`` stores it), with random values; nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re

import pytest
import torch
from timm.layers import FrozenBatchNormAct2d

from kdcourse import backbones
from kdcourse.backbones import OFFLINE_MODELS, MissingWeightsError, backbone, split_at

OFFLINE = "mobilenetv1_025.tflite_in1k"


@pytest.fixture(autouse=True)
def _offline_hub(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the hub answers at once instead of retrying the network
    monkeypatch.delenv(backbones.WEIGHTS_ENV, raising=False)


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def weights_folder(tmp_path, monkeypatch):
    """A folder holding the offline MobileNetV1-0.25 file: ImageNet shape (1,000 classes), random values,
    and its sha256 in the table of offline models in place of the real file's."""
    torch.manual_seed(1)
    reference = OFFLINE_MODELS[OFFLINE].build(1000)
    path = tmp_path / OFFLINE_MODELS[OFFLINE].file
    torch.save(reference.state_dict(), path)
    monkeypatch.setitem(OFFLINE_MODELS, OFFLINE, dataclasses.replace(OFFLINE_MODELS[OFFLINE], sha256=sha256(path)))
    return tmp_path, reference.state_dict()


def test_offline_weights_load_exactly_with_a_new_head(weights_folder, monkeypatch):
    folder, saved = weights_folder
    monkeypatch.setenv(backbones.WEIGHTS_ENV, str(folder))
    net = backbone(OFFLINE, 2)
    assert net.pretrained and net.weights == OFFLINE_MODELS[OFFLINE].file  # the file's name: records hold no folders
    state = net.model.state_dict()
    assert torch.equal(state["conv_stem.weight"], saved["conv_stem.weight"])
    assert torch.equal(state["blocks.4.1.conv_pw.weight"], saved["blocks.4.1.conv_pw.weight"])
    assert state["classifier.weight"].shape == (2, 256)  # the new head
    # the TFLite input scaling: (x_uint8 − 128) / 128
    assert net.mean == net.std == (128 / 255,) * 3


def test_a_new_head_on_pretrained_weights_starts_at_the_fan_in_scale(weights_folder, monkeypatch):
    """timm's MobileNet classifier init draws U(±1/√classes): ±0.71 for two classes. A new head on pretrained
    weights starts at PyTorch's fan-in scale instead (±1/√256 here), with a zero bias; a kept 1,000-way
    head keeps its pretrained weights, and random weights keep the architecture's own initialisation."""
    folder, saved = weights_folder
    monkeypatch.setenv(backbones.WEIGHTS_ENV, str(folder))
    torch.manual_seed(0)
    head = backbone(OFFLINE, 2).model.classifier
    assert head.weight.abs().max() <= 1 / 256 ** 0.5 and head.weight.abs().max() > 0.5 / 256 ** 0.5
    assert torch.equal(head.bias, torch.zeros(2))
    assert torch.equal(backbone(OFFLINE, 1000).model.classifier.weight, saved["classifier.weight"])
    torch.manual_seed(0)
    assert backbone(OFFLINE, 2, weights=None).model.classifier.weight.abs().max() > 0.5  # timm's own scheme


def test_pretrained_batchnorm_is_frozen_and_stays_frozen_in_train_mode(weights_folder):
    folder, _ = weights_folder
    net = backbone(OFFLINE, 2, weights_folder=folder)
    frozen = [m for m in net.model.modules() if isinstance(m, FrozenBatchNormAct2d)]
    assert frozen and not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.model.modules())
    net.model.train()
    x = torch.randn(4, 3, 64, 64)
    before = net.model.state_dict()["bn1.running_mean"].clone()
    net.model(x)
    assert torch.equal(net.model.state_dict()["bn1.running_mean"], before)
    trainable = {n for n, p in net.model.named_parameters() if p.requires_grad}
    assert not any("bn" in n for n in trainable)


def test_random_weights_are_explicit_and_keep_trainable_batchnorm():
    net = backbone(OFFLINE, 3, weights=None)
    assert not net.pretrained and net.weights == "random"
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.model.modules())


def test_offline_weights_of_the_right_shapes_but_other_values_are_refused(weights_folder):
    """The file's sha256 is compared with the table's: other weights of the same architecture do not load."""
    folder, _ = weights_folder
    path = folder / OFFLINE_MODELS[OFFLINE].file
    torch.manual_seed(2)
    torch.save(OFFLINE_MODELS[OFFLINE].build(1000).state_dict(), path)  # the same shapes, other values
    with pytest.raises(backbones.WeightsChecksumError, match=rf"{re.escape(str(path))}.*sha256.*Replace it with an intact copy"):
        backbone(OFFLINE, 2, weights_folder=folder)


def test_an_offline_file_is_hashed_once_per_path_size_and_mtime(weights_folder):
    """A second load of an unchanged file does not hash it again; a file rewritten (new mtime) is hashed again."""
    folder, _ = weights_folder
    path = folder / OFFLINE_MODELS[OFFLINE].file
    backbone(OFFLINE, 2, weights_folder=folder)
    before = path.stat()
    torch.manual_seed(2)
    torch.save(OFFLINE_MODELS[OFFLINE].build(1000).state_dict(), path)  # other values of the same size …
    assert path.stat().st_size == before.st_size
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # … and the old mtime: taken for the same file
    backbone(OFFLINE, 2, weights_folder=folder)  # not hashed again, so not refused
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    with pytest.raises(backbones.WeightsChecksumError, match="sha256"):
        backbone(OFFLINE, 2, weights_folder=folder)


def test_missing_offline_file_names_it_and_the_variable(tmp_path):
    with pytest.raises(MissingWeightsError, match="mobilenetv1_025_imagenet_from_tflite_same.pth") as error:
        backbone(OFFLINE, 2, weights_folder=tmp_path)
    assert "KDCOURSE_WEIGHTS" in str(error.value)
    with pytest.raises(MissingWeightsError, match="KDCOURSE_WEIGHTS"):
        backbone(OFFLINE, 2)  # no folder at all


def test_truncated_weights_file_is_named(tmp_path):
    path = tmp_path / OFFLINE_MODELS[OFFLINE].file
    torch.save(OFFLINE_MODELS[OFFLINE].build(1000).state_dict(), path)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(MissingWeightsError, match="truncated"):
        backbone(OFFLINE, 2, weights_folder=tmp_path)


def test_weights_of_another_architecture_are_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save(OFFLINE_MODELS["mobilenetv1_050.tflite_in1k"].build(1000).state_dict(), path)
    with pytest.raises(MissingWeightsError, match="do not fit"):
        backbone(OFFLINE, 2, weights=path)


def test_timm_weights_from_a_local_file(tmp_path):
    import timm

    torch.manual_seed(2)
    source = timm.create_model("resnet10t", num_classes=1000)
    torch.save(source.state_dict(), tmp_path / "resnet10t.pth")
    net = backbone("resnet10t", 5, weights=tmp_path / "resnet10t.pth")
    assert torch.equal(net.model.state_dict()["conv1.0.weight"], source.state_dict()["conv1.0.weight"])
    assert net.mean == (0.485, 0.456, 0.406)  # from the model's own pretrained configuration


def test_timm_weights_missing_offline_raise_instead_of_random():
    with pytest.raises(MissingWeightsError, match="huggingface-cli download timm/resnetv2_50.a1h_in1k"):
        backbone("resnetv2_50.a1h_in1k", 2)


def test_timm_model_without_pretrained_weights_is_refused(monkeypatch):
    import timm

    class NoWeights:
        hf_hub_id = url = file = None

    monkeypatch.setattr(timm.models, "get_pretrained_cfg", lambda name: NoWeights())
    with pytest.raises(MissingWeightsError, match="no pretrained weights"):
        backbone("resnet10t", 2)


@pytest.mark.parametrize("bad", [0, -1, 2.5])
def test_bad_number_of_classes(bad):
    with pytest.raises(ValueError, match="num_classes"):
        backbone(OFFLINE, bad, weights=None)


def test_unknown_model_name():
    with pytest.raises(ValueError, match="unknown model"):
        backbone("no_such_net", 2, weights=None)


@pytest.mark.parametrize("name", [OFFLINE, "mobilenetv2_100.tflite_in1k", "resnetv2_50"])
def test_split_recomposes_the_network(name):
    torch.manual_seed(0)
    model = backbone(name, 2, weights=None).model.eval()
    trunk, top = split_at(model, 16)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features = trunk(x)
        assert features.shape[-1] == 4  # 64 px / 16
        torch.testing.assert_close(top(features), model(x))
        assert top(features, pre_logits=True).shape == (2, model.num_features)
    assert {id(p) for p in top.parameters()} <= {id(p) for p in model.parameters()}  # shared, not copied


def test_split_refuses_what_it_cannot_cut():
    model = backbone(OFFLINE, 2, weights=None).model
    with pytest.raises(ValueError, match="no stage at reduction 64"):
        split_at(model, 64)
    with pytest.raises(ValueError, match="fine-tune it whole"):
        split_at(torch.nn.Linear(3, 3))


@pytest.mark.parametrize("name", [OFFLINE, "resnetv2_50"])
def test_pooled_head_is_the_networks_classifier_on_pooled_features(name):
    from kdcourse.backbones import pooled_head

    torch.manual_seed(0)
    model = backbone(name, 3, weights=None).model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        pooled = model.forward_head(model.forward_features(x), pre_logits=True)
        torch.testing.assert_close(pooled_head(model)(pooled), model(x))
    assert {id(p) for p in pooled_head(model).parameters()} <= {id(p) for p in model.parameters()}
