"""Training: exact resume, checkpoints, schedules, patches and DistributedDataParallel."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from amms_lib.checkpoint import read_checkpoint
from amms_lib.errors import AmmsError
from amms_lib.patches import PatchDataset, StepBatchSampler, load_pairs
from amms_lib.resize import imresize
from amms_lib.train import TrainConfig, lr_factor, read_metrics, train

TINY = dict(channels=8, n_amms=1, n_am=1, so_reduction=4)


def _cfg(tmp_path, **kw):
    base = TrainConfig(model_kwargs=TINY, epochs=1, iters_per_epoch=6, batch_size=2,
                       patch_size=16, val_every=3, val_images=1, val_max_side=24, workers=0, log_every=1,
                       device="cpu", out_dir=str(tmp_path / "run"), train_sets=("T91",))
    return replace(base, **kw)


def _losses(out_dir):
    return [(r["step"], r["loss"]) for r in read_metrics(out_dir) if "loss" in r]


def test_killed_and_resumed_run_repeats_the_uninterrupted_losses(use_data, tmp_path):
    whole = _cfg(tmp_path, out_dir=str(tmp_path / "whole"))
    train(whole)
    killed = _cfg(tmp_path, out_dir=str(tmp_path / "killed"))
    train(killed, stop_after=5)  # dies at step 5: the last checkpoint is from step 3
    assert read_checkpoint(tmp_path / "killed" / "last.pt")["step"] == 3
    train(replace(killed, resume=True))
    a, b = _losses(whole.out_dir), _losses(killed.out_dir)
    assert [s for s, _ in a] == [s for s, _ in b] == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose([l for _, l in a], [l for _, l in b], rtol=1e-6)
    assert a[-1][1] != a[0][1]


def test_checkpoints_metrics_and_config(use_data, tmp_path):
    cfg = _cfg(tmp_path)
    result = train(cfg)
    run = tmp_path / "run"
    last, best = read_checkpoint(run / "last.pt"), read_checkpoint(run / "best.pt")
    assert last["step"] == 6 and last["scale"] == 2 and last["model"] == "amms"
    assert best["metrics"]["psnr"] == pytest.approx(result["best_psnr"])
    assert json.loads((run / "config.json").read_text())["batch_size"] == 2
    vals = [r for r in read_metrics(run) if "psnr" in r]
    assert [r["step"] for r in vals] == [3, 6] and all(5 < r["psnr"] < 50 for r in vals)
    assert not [p for p in run.iterdir() if p.name.startswith(".")]  # no temp files


def test_resume_refuses_other_options_and_corrupt_checkpoints(use_data, tmp_path):
    cfg = _cfg(tmp_path, iters_per_epoch=3)
    train(cfg)
    with pytest.raises(AmmsError, match="model options"):
        train(replace(cfg, resume=True, model_kwargs={**TINY, "channels": 4}))
    with pytest.raises(AmmsError, match="not x3"):
        train(replace(cfg, resume=True, scale=3))
    last = tmp_path / "run" / "last.pt"
    last.write_bytes(last.read_bytes()[:100])
    with pytest.raises(AmmsError, match="corrupt"):
        train(replace(cfg, resume=True))


def test_learning_rate_recipes():
    paper = TrainConfig(epochs=1000, iters_per_epoch=1000)
    assert lr_factor(paper, 0) == 1 and lr_factor(paper, 199_999) == 1
    assert lr_factor(paper, 200_000) == 0.5 and lr_factor(paper, 999_999) == 0.5**4
    fast = TrainConfig(recipe="fast", epochs=1, iters_per_epoch=1000, warmup=0.1)
    f = [lr_factor(fast, s) for s in range(1000)]
    assert f[0] == pytest.approx(0.01) and f[99] == pytest.approx(1.0)
    assert all(x >= y for x, y in zip(f[100:], f[101:])) and f[-1] < 1e-4


def _images(n=3, size=(40, 52)):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(n)]


def test_patches_are_reproducible_aligned_and_augmented():
    hrs = _images()
    lrs = [imresize(h, 1 / 2, border="clamp") for h in hrs]
    ds = PatchDataset(hrs, lrs, scale=2, patch_size=24, seed=5)
    lr_p, hr_p = ds[17]
    assert lr_p.shape == (3, 12, 12) and hr_p.shape == (3, 24, 24)
    torch.testing.assert_close(ds[17][0], lr_p)  # same index, same patch
    assert not torch.equal(ds[18][1], hr_p)
    # every patch is an aligned crop of one image pair, possibly flipped/rotated
    plain = PatchDataset(hrs, lrs, scale=2, patch_size=24, seed=5, augment=False)
    for i in range(20):
        lr_p, hr_p = plain[i]
        to_u8 = lambda t: t.mul(255).round().byte()  # noqa: E731
        lr_hr = imresize(to_u8(hr_p), 1 / 2, border="clamp")  # LR of the HR patch itself
        assert torch.equal(lr_hr[:, 3:-3, 3:-3], to_u8(lr_p)[:, 3:-3, 3:-3])
    with pytest.raises(AmmsError, match="smaller patch_size"):
        PatchDataset(hrs, lrs, scale=2, patch_size=80)


def test_sampler_gives_each_rank_its_own_samples():
    a = list(StepBatchSampler(3, 5, 4, rank=0, world=2))
    b = list(StepBatchSampler(3, 5, 4, rank=1, world=2))
    assert a == [[24, 25, 26, 27], [32, 33, 34, 35]]
    assert not set(sum(a, [])) & set(sum(b, []))


def test_lr_cache_key_follows_scale_and_files(tmp_path):
    from PIL import Image

    files = []
    for i, img in enumerate(_images(2, (48, 48))):
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(img).save(files[-1])
    _, lr2, k2 = load_pairs(files, 2, tmp_path / "cache")
    _, lr3, k3 = load_pairs(files, 3, tmp_path / "cache")
    _, _, k_one = load_pairs(files[:1], 2, tmp_path / "cache")
    assert len({k2, k3, k_one}) == 3 and lr2[0].shape == (24, 24, 3)
    _, again, k2b = load_pairs(files, 2, tmp_path / "cache")  # from the cache
    assert k2b == k2 and np.array_equal(again[0], lr2[0])
    assert np.array_equal(lr3[0], imresize(np.asarray(Image.open(files[0])), 1 / 3,
                                           border="clamp"))


def test_distributed_two_processes_then_resume_on_one(use_data, tmp_path):
    out = tmp_path / "ddp"
    args = ["--model-kwargs", json.dumps(TINY), "--epochs", "1", "--iters-per-epoch", "4",
            "--batch-size", "2", "--patch-size", "16", "--val-every", "2",
            "--val-images", "1", "--val-max-side", "24", "--workers", "0", "--log-every", "1", "--device", "cpu",
            "--train-sets", "T91", "--out-dir", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc_per_node", "2", "-m", "amms_lib.train", *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    steps = [r["step"] for r in read_metrics(out) if "loss" in r]
    assert steps == [1, 2, 3, 4]  # rank 0 alone writes the log
    assert read_checkpoint(out / "last.pt")["step"] == 4
    more = [a if a != "4" else "6" for a in args] + ["--resume"]
    done = subprocess.run([sys.executable, "-m", "amms_lib.train", *more], env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert read_checkpoint(out / "last.pt")["step"] == 6
