"""The engine's precision and speed options on the CPU: autocast bf16/fp16 VGG with fp32 losses,
torch.compile, channels_last under bf16. (No GPU here: the choice between bf16 and fp16 is CUDA-only;
on the CPU "auto" is bf16 where the CPU computes bf16 natively.)"""

from __future__ import annotations

import pytest
import torch

from stylecore.images import load_tensor
from stylecore.metrics import gram_distance
from stylecore.params import ParamError, Params
from stylecore.precision import Features, autocast_dtype, channels_last_for, cpu_has_native_bf16
from stylecore.transfer import StyleTransfer, TransferJob
from stylecore.weights import load_vgg


def test_precision_names_resolve_per_device():
    cpu = torch.device("cpu")
    assert autocast_dtype("auto", cpu) is (torch.bfloat16 if cpu_has_native_bf16() else None) and autocast_dtype("fp32", cpu) is None
    assert autocast_dtype("bf16", cpu) is torch.bfloat16 and autocast_dtype("fp16", cpu) is torch.float16
    with pytest.raises((KeyError, ValueError, ParamError), match="fp32"):
        autocast_dtype("fp8", cpu)
    with pytest.raises((KeyError, ValueError, ParamError), match="bf16"):
        StyleTransfer("cpu", precision="half")


def test_bf16_features_are_computed_in_bf16_and_returned_in_fp32():
    vgg, _ = load_vgg("random")
    x = torch.rand(2, 3, 24, 24)
    f32 = Features(vgg, None, False, False)(x, ["relu1_1", "relu2_1"])
    bf = Features(vgg, torch.bfloat16, False, False)(x, ["relu1_1", "relu2_1"])
    for k in f32:
        assert bf[k].dtype == torch.float32 and f32[k].dtype == torch.float32
        assert not torch.equal(bf[k], f32[k])  # really computed in bf16
        assert torch.allclose(bf[k], f32[k], rtol=0.05, atol=0.05 * f32[k].abs().max().item())
    assert all(f.dtype == torch.float32 for f in f32.values())


def test_bf16_on_the_cpu_runs_nhwc_without_touching_the_shared_module():
    cpu = torch.device("cpu")
    assert channels_last_for(cpu, torch.bfloat16) and not channels_last_for(cpu, None) and not channels_last_for(cpu, torch.float16)
    vgg, _ = load_vgg("random")
    x = torch.rand(2, 3, 24, 24)
    nchw = Features(vgg, torch.bfloat16, False, False)(x, ["conv1_1", "relu2_1"])
    nhwc = Features(vgg, torch.bfloat16, True, False)(x, ["conv1_1", "relu2_1"])
    for k in nchw:
        assert nhwc[k].dtype == torch.float32 and nhwc[k].is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(nhwc[k], nchw[k], rtol=1e-2, atol=1e-2 * nchw[k].abs().max().item())
    # The cached module is shared with the metrics: its weights keep the layout they were loaded in.
    assert all(p.is_contiguous() for p in vgg.parameters())


@pytest.mark.slow
@pytest.mark.parametrize("style_loss", ["gram", "w2"])
def test_bf16_cpu_run_gives_a_finite_stylised_image_close_to_fp32(content_path, style_path, hed, style_loss):
    content, style = load_tensor(content_path, 48), load_tensor(style_path, 48)
    # Adam: L-BFGS's line searches amplify any rounding difference into another trajectory
    p = Params(size=48, iterations=15, optimizer="adam", weights=hed, style_loss=style_loss)
    job = TransferJob(content, (style,), p)
    r32 = StyleTransfer("cpu", precision="fp32").run([job])[0]  # "auto" is bf16 on a CPU with native bf16
    r16 = StyleTransfer("cpu", precision="bf16").run([job])[0]
    assert torch.isfinite(r16.image).all() and all(torch.isfinite(torch.tensor(v)) for v in r16.losses.values())
    assert (r16.image - r32.image).abs().mean() < 0.02  # close to the fp32 image (of [0, 1])
    vgg, _ = load_vgg(hed)
    layers = p.style_layers
    g0 = gram_distance(content, style, vgg, layers).item()
    g32, g16 = (gram_distance(r.image[None], style, vgg, layers).item() for r in (r32, r16))
    assert g16 < 0.6 * g0 and g16 == pytest.approx(g32, rel=0.15)  # as stylised as fp32


@pytest.mark.slow
def test_compiled_forward_gives_the_eager_result():
    c, s = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    p = Params(size=32, iterations=5, optimizer="adam", weights="random", style_layers=("relu1_1", "relu2_1"), content_layers=("relu2_2",))
    eager = StyleTransfer("cpu").run([TransferJob(c, (s,), p)])[0]
    # aot_eager: the torch.compile path (Dynamo graph capture, AOT autograd) without inductor's C++
    # build, which costs ~45 s on this CPU; inductor itself (compile=True) was checked by hand.
    compiled = StyleTransfer("cpu", compile="aot_eager").run([TransferJob(c, (s,), p)])[0]
    assert (compiled.image - eager.image).abs().max() < 1e-3
    assert compiled.losses["total"] == pytest.approx(eager.losses["total"], rel=1e-3)
