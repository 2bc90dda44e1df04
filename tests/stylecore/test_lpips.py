"""Our LPIPS-VGG vs the lpips package with the same backbone weights; its properties as a loss."""

from __future__ import annotations

import copy
import warnings
from types import SimpleNamespace

import pytest
import torch

from stylecore import lpips as L
from stylecore import weights as W
from stylecore.vgg import CAFFE_MEAN_BGR, VGGFeatures

SIZES = [(32, 32), (64, 48), (100, 100)]


@pytest.fixture(scope="module")
def lpips_package():
    """The lpips package's own LPIPS-VGG (v0.1 linear weights, pnet_rand=True: no torchvision
    download). Its trunk is torchvision's VGG-16 `features` (`make_layers(cfgs["D"])`); only the
    classifier that lpips throws away is skipped, since initialising its 120M weights is slow."""
    import lpips
    import torchvision.models.vgg as tv_vgg

    def vgg16_features_only(pretrained: bool = False, **_kw):
        assert not pretrained
        return SimpleNamespace(features=tv_vgg.make_layers(tv_vgg.cfgs["D"]))

    with warnings.catch_warnings(), pytest.MonkeyPatch.context() as mp:
        warnings.simplefilter("ignore")  # torchvision's `pretrained=` deprecation
        mp.setattr(lpips.pretrained_networks.tv, "vgg16", vgg16_features_only)
        return lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False).eval()


def reference_lpips(package_model, backbone: VGGFeatures):
    """A copy of the package's LPIPS with its trunk overwritten by `backbone`'s conv weights."""
    ref = copy.deepcopy(package_model)
    slices = [ref.net.slice1, ref.net.slice2, ref.net.slice3, ref.net.slice4, ref.net.slice5]
    n_copied = 0
    for sl in slices:
        for name, module in sl.named_children():
            module.load_state_dict(backbone.features[int(name)].state_dict())
            n_copied += isinstance(module, torch.nn.Conv2d)
    assert n_copied == 13
    return ref.eval()


def backbone_for(spec: str, preprocessing: str = "torchvision") -> VGGFeatures:
    arch, sd = W.load_state_dict(W.resolve(spec))
    return VGGFeatures(arch, sd, preprocessing=preprocessing)


def random_pairs(h: int, w: int, seed: int, b: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 3, h, w, generator=g)
    # y: a smooth perturbation of x plus noise, so pairs are not just two independent noises
    y = (0.6 * x + 0.4 * torch.rand(b, 3, h, w, generator=g)).clamp(0, 1)
    return x, y


@pytest.fixture(scope="module")
def random_backbone() -> VGGFeatures:
    return backbone_for("random-vgg16")


@pytest.fixture(scope="module")
def hed_torchvision_backbone(hed) -> VGGFeatures:
    # lpips' ScalingLayer is torchvision's normalisation: compare on that preprocessing.
    return backbone_for(hed, "torchvision")


# Two tests, not one parametrised over a fixture looked up by name: a test names every fixture it
# uses, so the suite knows which ones need the real weights (tests/conftest.py).
def test_equals_lpips_package_with_same_backbone_random(random_backbone, lpips_package):
    _assert_equals_lpips_package(random_backbone, lpips_package)


def test_equals_lpips_package_with_same_backbone_hed(hed_torchvision_backbone, lpips_package):
    _assert_equals_lpips_package(hed_torchvision_backbone, lpips_package)


def _assert_equals_lpips_package(bb: VGGFeatures, lpips_package) -> None:
    ours, ref = L.LPIPS(bb), reference_lpips(lpips_package, bb)
    for seed, (h, w) in enumerate(SIZES):
        b = 2 if h * w <= 64 * 64 else 1  # CPU budget: the largest size with one pair
        x, y = random_pairs(h, w, seed, b)
        with torch.no_grad():
            got = ours(x, y)
            want = ref(x, y, normalize=True).flatten()  # normalize=True: [0, 1] -> [-1, 1]
        assert got.shape == (b,)
        assert (want > 1e-3).all()
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_caffe_preprocessing_equals_lpips_package_with_equivalent_input_map(hed, lpips_package):
    """`vgg16-hed` goes through its own Caffe normalisation (BGR, 0-255, minus mean). The same
    map written as lpips' ScalingLayer (shift/scale of [-1, 1] input) plus a BGR flip folded into
    conv1_1 must give the same LPIPS."""
    ours = L.load_lpips(hed)
    assert ours.backbone.normalize.preprocessing == "caffe"
    ref = reference_lpips(lpips_package, ours.backbone)
    conv11 = ref.net.slice1[0]
    conv11.weight.data = conv11.weight.data.flip(1)  # RGB input into BGR-trained kernels
    mean_rgb = torch.tensor(CAFFE_MEAN_BGR[::-1]).view(1, 3, 1, 1)
    # u*255 - mean = ((2u - 1) - shift) / scale  with  shift = 2 mean/255 - 1, scale = 2/255
    ref.scaling_layer.shift.copy_(2 * mean_rgb / 255 - 1)
    ref.scaling_layer.scale.fill_(2 / 255)
    x, y = random_pairs(64, 48, seed=7)
    with torch.no_grad():
        want = ref(x, y, normalize=True).flatten()
    torch.testing.assert_close(ours(x, y), want, atol=1e-5, rtol=0)


def test_identical_images_give_zero_and_it_is_symmetric(random_backbone):
    model = L.LPIPS(random_backbone)
    x, y = random_pairs(32, 48, seed=3, b=2)
    assert torch.equal(model(x, x), torch.zeros(2))
    d_xy, d_yx = model(x, y), model(y, x)
    assert (d_xy > 0).all()
    assert torch.equal(d_xy, d_yx)


def test_gradients_reach_the_input_and_not_the_weights(random_backbone):
    model = L.LPIPS(random_backbone)
    x, y = random_pairs(32, 32, seed=4)
    x = x.clone().requires_grad_(True)
    model(x, y).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())
    for k in range(5):
        lin = model.linear(k)
        assert not lin.requires_grad and lin.grad is None
        assert f"lin{k}" in dict(model.named_buffers())
    assert not model.training
    model.train()
    assert not model.training  # a fixed metric: cannot be flipped into training mode


def test_cached_target_features_equal_forward_and_broadcast(random_backbone):
    model = L.LPIPS(random_backbone)
    x, y = random_pairs(48, 32, seed=5, b=2)
    with torch.no_grad():
        feats = model.features(y[:1])
    assert [f.shape[1] for f in feats] == list(L.LPIPS_CHANNELS)
    got = model.distance_to_features(x, feats)  # (2,) against one target
    want = model(x, y[:1].expand(2, -1, -1, -1))
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_linear_weights_are_the_package_file(random_backbone, lpips_package):
    model = L.LPIPS(random_backbone)
    for k, c in enumerate(L.LPIPS_CHANNELS):
        assert model.linear(k).shape == (1, c, 1, 1)
        assert torch.equal(model.linear(k), lpips_package.lins[k].model[-1].weight.detach())
    assert L.linear_weights_path().parts[-3:] == ("weights", "v0.1", "vgg.pth")


def test_normalize_channels_and_spatial_average():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(2, 7, 5, 4, generator=g)
    f[0, :, 1, 2] = 0.0  # an all-zero location (a dead ReLU column)
    f.requires_grad_(True)
    n = L.normalize_channels(f)
    norms = n.detach().norm(dim=1)
    mask = torch.ones_like(norms, dtype=torch.bool)
    mask[0, 1, 2] = False
    torch.testing.assert_close(norms[mask], torch.ones(int(mask.sum())))
    assert norms[0, 1, 2] == 0
    n.sum().backward()
    assert torch.isfinite(f.grad).all()  # sqrt(sum x^2) would give NaN at the zero location
    torch.testing.assert_close(L.spatial_average(f.detach()), f.detach().mean(dim=(2, 3)))


def test_unequal_sizes_are_refused(random_backbone):
    model = L.LPIPS(random_backbone)
    with pytest.raises(ValueError, match="equal size"):
        model(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 48))


def test_load_lpips_caches_labels_and_refuses_vgg19():
    a = L.load_lpips("random-vgg16")
    assert L.load_lpips("random-vgg16") is a
    assert "RANDOM" in a.weights_label
    assert a.backbone.arch == "vgg16"
    with pytest.raises(ValueError, match="vgg16-hed"):
        L.load_lpips("random")  # a VGG-19: the linear weights are calibrated on VGG-16 taps


def test_load_lpips_hed_label_names_the_file_hash(hed):
    model = L.load_lpips(hed)
    assert model.weights_label.startswith("vgg16-hed@sha256:")
    assert W.WEIGHT_SETS[hed].path().is_file()
    assert W.file_sha256(W.WEIGHT_SETS[hed].path()).startswith(model.weights_label.split(":")[1])


def test_unknown_spec_lists_valid_names():
    with pytest.raises(KeyError, match="vgg16-hed"):
        L.load_lpips("vgg16-imagenett")
