"""What a GPU run depends on, checked on every device torch sees.

Each test runs on the CPU and, marked ``cuda`` (skipped without a GPU, see conftest),
on CUDA: fused vs naive attention in float32 and bf16, the float32 statistics of
second-order attention under autocast, bf16 autocast through the whole network,
channels-last, ``torch.compile`` of a training step, a 20-step training that resumes
exactly, and a checkpoint moving between devices. ``pytest -m cuda`` runs only the
CUDA half (``scripts/gpu_run.py`` does, on the lent GPU).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from amms_lib.amms import AMMSConfig, AMMSNet
from amms_lib.checkpoint import FORMAT, load_model, save_checkpoint
from amms_lib.non_local import NonLocalBlock, fused_attention, naive_attention
from amms_lib.runlog import read_metrics
from amms_lib.second_order import SecondOrderChannelAttention
from amms_lib.train import TrainConfig, train

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]
TINY = {**AMMSConfig.tiny_kwargs(), "channels": 16}


@pytest.fixture(autouse=True)
def no_tf32():
    """Exact float32 on CUDA (TF32 convs/matmuls are on by default and round to
    10 bits), so float32 comparisons can stay tight; restored afterwards."""
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def tiny_net(device, seed=0, **kw) -> AMMSNet:
    """A small AMMS whose non-local W is not zero, so attention reaches the output."""
    torch.manual_seed(seed)
    net = AMMSNet(scale=2, **{**TINY, **kw})
    for m in net.modules():
        if isinstance(m, NonLocalBlock):
            torch.nn.init.normal_(m.out.weight, std=0.1)
    return net.to(device)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


# -- attention ------------------------------------------------------------------------

@pytest.mark.parametrize("dtype, bound",
                         [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("device", DEVICES)
def test_fused_attention_matches_naive_without_the_matrix(device, dtype, bound):
    """The fused path must run in a kernel that never builds the N x N matrix (math
    fallback refused) and agree with the explicit matrix, both near float64."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 300, 32, generator=g) * s for s in (0.4, 0.4, 1.0))
    ref = naive_attention(q.double(), k.double(), v.double())  # logits of std ~5
    q, k, v = (t.to(device, dtype) for t in (q, k, v))
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]):
        fused = fused_attention(q, k, v)
    naive = naive_attention(q, k, v)
    assert fused.dtype == naive.dtype == dtype
    assert rel_err(fused.cpu(), ref) < bound and rel_err(naive.cpu(), ref) < bound
    assert rel_err(fused.cpu(), naive.cpu()) < bound


@pytest.mark.parametrize("device", DEVICES)
def test_non_local_block_attends_in_float32_under_autocast(device):
    torch.manual_seed(0)
    full = NonLocalBlock(32).to(device)
    torch.nn.init.normal_(full.out.weight, std=0.5)  # W y dominates z - x
    naive = NonLocalBlock(32, mode="naive").to(device)
    naive.load_state_dict(full.state_dict())
    x = (3 * torch.randn(2, 32, 16, 16, device=device)).bfloat16()
    with torch.no_grad():
        ref = naive(x.float()) - x.float()  # the non-local term, float32, explicit
        with torch.autocast(device, dtype=torch.bfloat16):
            out = full(x)
    assert out.dtype == torch.bfloat16
    # only the final rounding of z to bf16 is left: 0.2%; attention in bf16 gave 1.3%
    assert rel_err(out.float() - x.float(), ref) < 0.006


@pytest.mark.parametrize("device", DEVICES)
def test_second_order_statistics_stay_float32_under_autocast(device):
    torch.manual_seed(0)
    soca = SecondOrderChannelAttention(32, reduction=4).to(device)
    x = torch.randn(2, 32, 12, 12, device=device).bfloat16()
    with torch.autocast(device, dtype=torch.bfloat16):
        z, out = soca.descriptor(x), soca(x)
    assert z.dtype == torch.float32 and out.dtype == torch.bfloat16
    torch.testing.assert_close(z, soca.descriptor(x.float()), rtol=1e-5, atol=1e-6)
    assert torch.isfinite(out).all()


# -- the whole network ----------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
def test_bf16_autocast_through_the_network_stays_near_float32(device):
    net = tiny_net(device).eval()
    x = torch.rand(2, 3, 20, 20, device=device)
    with torch.no_grad():
        ref = net(x)
        with torch.autocast(device, dtype=torch.bfloat16):
            out = net(x)
    err = (out.float() - ref).abs()
    assert torch.isfinite(out).all()
    # measured on CPU: max 0.0044, mean 0.0009 (inputs kept to 4 bits: 0.017, 0.0032);
    # and not zero: bf16 really ran
    assert 0 < err.max() < 0.012 and err.mean() < 0.002, (err.max(), err.mean())


@pytest.mark.parametrize("device", DEVICES)
def test_channels_last_matches_contiguous(device):
    net = tiny_net(device).eval()
    x = torch.rand(2, 3, 17, 23, device=device)  # odd sizes: strides differ per layout
    with torch.no_grad():
        ref = net(x)
        net = net.to(memory_format=torch.channels_last)
        out = net(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def _train_steps(net, device, steps=3, channels_last=False, amp=False):
    """A few L1 + Adam steps on fixed random patches, as amms_lib.train runs them."""
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(1)
    lr_b = torch.rand(2, 3, 12, 12, generator=g).to(device)
    hr_b = torch.rand(2, 3, 24, 24, generator=g).to(device)
    if channels_last:
        lr_b = lr_b.contiguous(memory_format=torch.channels_last)
    losses = []
    for _ in range(steps):
        with torch.autocast(device, dtype=torch.bfloat16, enabled=amp):
            loss = F.l1_loss(net(lr_b).float(), hr_b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


# cpu: float32 (compiling cl+bf16 gave NaN gradients there in torch 2.13); cuda: the
# GPU training setting, channels-last + bf16, with bf16 tolerances (Adam moves a weight
# by at most lr = 1e-3 a step, so 1.5e-3 after 3 steps still catches a wrong update)
@pytest.mark.parametrize("device, cl_amp, rtol, atol", [
    ("cpu", False, 1e-4, 1e-5),
    pytest.param("cuda", True, 2e-2, 1.5e-3, marks=pytest.mark.cuda)])
def test_compiled_training_step_matches_eager(device, cl_amp, rtol, atol):
    small = dict(channels=8, so_iters=2, sf_layers=1)  # inductor on CPU compiles slowly
    eager, plain = tiny_net(device, **small), tiny_net(device, **small)
    if cl_amp:
        eager, plain = (n.to(memory_format=torch.channels_last) for n in (eager, plain))
    compiled = torch.compile(plain)
    a = _train_steps(eager, device, channels_last=cl_amp, amp=cl_amp)
    b = _train_steps(compiled, device, channels_last=cl_amp, amp=cl_amp)
    assert np.isfinite(b).all() and a[-1] != a[0]
    np.testing.assert_allclose(b, a, rtol=rtol)
    for (name, p), q in zip(eager.named_parameters(), plain.parameters()):
        assert torch.isfinite(q.grad).all(), name
        torch.testing.assert_close(q, p, rtol=rtol, atol=atol, msg=name)


# -- checkpoints and resuming ---------------------------------------------------------

def test_checkpoint_of_a_compiled_model_loads_into_a_plain_one(tmp_path):
    net = tiny_net("cpu")
    compiled = torch.compile(net)  # wrapping only: nothing compiles until it runs
    assert all(k.startswith("_orig_mod.") for k in compiled.state_dict())
    path = save_checkpoint(tmp_path / "c.pt", compiled, name="amms", scale=2,
                           model_kwargs=TINY)
    plain, _ = load_model(path)
    x = torch.rand(1, 3, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), net.eval()(x))


def test_raw_state_dict_of_a_compiled_model_loads(tmp_path):
    net = tiny_net("cpu")
    payload = {"format": FORMAT, "model": "amms", "scale": 2, "model_kwargs": TINY,
               "state_dict": torch.compile(net).state_dict()}  # as code may save it
    torch.save(payload, tmp_path / "raw.pt")
    plain, _ = load_model(tmp_path / "raw.pt")
    torch.testing.assert_close(plain.state_dict(), net.state_dict())


def _run_cfg(tmp_path, device, name):
    return TrainConfig(model_kwargs=dict(TINY, channels=8), epochs=1,
                       iters_per_epoch=20, batch_size=2, patch_size=32, val_every=10,
                       val_images=1, val_max_side=24, workers=0, log_every=1,
                       device=device, lr=5e-4, recipe="fast", train_sets=("skimage",),
                       out_dir=str(tmp_path / name))


def _losses(cfg):
    return [(r["step"], r["loss"]) for r in read_metrics(cfg.out_dir) if "loss" in r]


@pytest.mark.parametrize("device", DEVICES)
def test_twenty_steps_resume_exactly_and_load_on_the_cpu(device, tmp_path):
    """Killed at step 15 (last checkpoint: step 10) and resumed, a run repeats the
    uninterrupted one; its checkpoint then gives the same output on the CPU."""
    whole = _run_cfg(tmp_path, device, "whole")
    train(whole)
    killed = _run_cfg(tmp_path, device, "killed")
    train(killed, stop_after=15)
    train(replace(killed, resume=True))
    a, b = _losses(whole), _losses(killed)
    assert [s for s, _ in a] == [s for s, _ in b] == list(range(1, 21))
    # cuDNN/atomics make CUDA runs differ in the last bits; the CPU repeats exactly
    rtol = 1e-6 if device == "cpu" else 5e-3  # Adam without its state: 1e-2 and more
    np.testing.assert_allclose([v for _, v in b], [v for _, v in a], rtol=rtol)
    assert a[-1][1] != a[0][1]

    cpu_net, ckpt = load_model(tmp_path / "whole" / "last.pt", device="cpu")
    assert ckpt["step"] == 20
    dev_net, _ = load_model(tmp_path / "whole" / "last.pt", device=device)
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        out_cpu, out_dev = cpu_net(x), dev_net(x.to(device)).cpu()
    assert all(p.device.type == "cpu" for p in cpu_net.parameters())
    torch.testing.assert_close(out_cpu, out_dev, rtol=1e-4, atol=1e-4)
