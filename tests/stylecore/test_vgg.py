"""Named-layer VGG: naming, equality with torchvision's `features`, truncation, preprocessing."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from stylecore.vgg import Normalization, VGGFeatures, check_layers, infer_arch, layer_names

ARCHS = {"vgg16": torchvision.models.vgg16, "vgg19": torchvision.models.vgg19}


@pytest.fixture(scope="module")
def tv_features() -> dict[str, nn.Sequential]:
    torch.manual_seed(0)
    return {arch: ctor(weights=None).features.eval() for arch, ctor in ARCHS.items()}


@pytest.mark.parametrize("arch", ["vgg16", "vgg19"])
def test_names_follow_torchvision_module_order(arch, tv_features):
    names = layer_names(arch)
    feats = tv_features[arch]
    assert len(names) == len(feats)
    kinds = {"conv": nn.Conv2d, "relu": nn.ReLU, "pool": nn.MaxPool2d}
    for name, module in zip(names, feats):
        assert isinstance(module, kinds[name[:4]]), (name, module)
    # Spot checks from design.md's table (vgg19) and the vgg16 pattern.
    idx = {n: i for i, n in enumerate(names)}
    if arch == "vgg19":
        assert (idx["conv3_1"], idx["pool3"], idx["conv4_2"], idx["relu4_2"], idx["pool5"]) == (10, 18, 21, 22, 36)
    else:
        assert (idx["pool3"], idx["relu4_3"], idx["pool5"]) == (16, 22, 30)


@pytest.mark.parametrize("arch", ["vgg16", "vgg19"])
def test_outputs_equal_slicing_torchvision_by_hand(arch, tv_features):
    feats = tv_features[arch]
    model = VGGFeatures(arch, feats.state_dict())
    x = torch.rand(2, 3, 40, 56)
    names = layer_names(arch)
    wanted = ["conv1_1", "relu1_2", "pool1", "conv3_2", "relu4_1", "pool4", names[-1]]
    out = model(x, wanted)
    assert list(out) == sorted(out, key=names.index)  # returned in network order
    normed = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        for name in wanted:
            ref = feats[: names.index(name) + 1](normed.clone())
            torch.testing.assert_close(out[name], ref, rtol=1e-5, atol=1e-5)


def test_conv_output_is_not_clobbered_by_the_relu_after_it(tv_features):
    model = VGGFeatures("vgg19", tv_features["vgg19"].state_dict())
    out = model(torch.rand(1, 3, 32, 32), ["conv1_1", "relu1_1"])
    assert (out["conv1_1"] < 0).any(), "conv output must keep its negative values"
    torch.testing.assert_close(out["relu1_1"], out["conv1_1"].clamp_min(0))


def test_truncation_runs_no_later_module():
    model = VGGFeatures("vgg19")
    ran: list[str] = []
    for name in model.names:
        model.module(name).register_forward_hook(lambda m, i, o, name=name: ran.append(name))
    model(torch.rand(1, 3, 32, 32), ["relu2_1", "conv1_2"])
    assert ran == model.names[: model.names.index("relu2_1") + 1]


def test_avg_pooling_replaces_every_pool():
    model = VGGFeatures("vgg16", pooling="avg")
    pools = [model.module(n) for n in model.names if n.startswith("pool")]
    assert len(pools) == 5 and all(isinstance(p, nn.AvgPool2d) for p in pools)
    x = torch.rand(1, 3, 8, 8)
    out = model(x, ["relu1_2", "pool1"])
    torch.testing.assert_close(out["pool1"], nn.functional.avg_pool2d(out["relu1_2"], 2))


def test_frozen_and_eval():
    model = VGGFeatures("vgg16")
    assert not any(p.requires_grad for p in model.parameters())
    model.train()
    assert not model.training
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    model(x, ["relu1_1"])["relu1_1"].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # gradients reach the image


def test_unknown_layer_lists_valid_names():
    with pytest.raises(KeyError, match=r"relu4_2.*valid: conv1_1, relu1_1"):
        check_layers("vgg19", ["relu4_22"])
    with pytest.raises(KeyError, match="conv3_4"):  # vgg16 has no conv3_4
        VGGFeatures("vgg16")(torch.rand(1, 3, 16, 16), ["conv3_4"])


def test_caffe_preprocessing_is_bgr_0_255_minus_mean():
    x = torch.rand(2, 3, 5, 7)
    got = Normalization("caffe")(x)
    want = x.flip(1) * 255 - torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
    assert {n for n, _ in Normalization("caffe").named_buffers()} == {"mean", "scale"}


def test_infer_arch_from_state_dict(tv_features):
    assert infer_arch(tv_features["vgg16"].state_dict()) == "vgg16"
    full = {f"features.{k}": v for k, v in tv_features["vgg19"].state_dict().items()}
    full["classifier.0.weight"] = torch.zeros(2, 2)
    assert infer_arch(full) == "vgg19"
    VGGFeatures("vgg19", full)  # full torchvision state_dicts load too
