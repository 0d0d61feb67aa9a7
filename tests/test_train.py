"""Training: exact resume, checkpoints, schedules, patches and DistributedDataParallel."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from amms_lib import data
from amms_lib.amms import AMMSConfig
from amms_lib.checkpoint import read_checkpoint
from amms_lib.errors import AmmsError
from amms_lib.images import read_image, write_image
from amms_lib.patches import PatchDataset, StepBatchSampler, load_pairs, train_files
from amms_lib.resize import imresize
from amms_lib.runlog import read_metrics
from amms_lib.train import TrainConfig, lr_factor, train

TINY = AMMSConfig.tiny_kwargs()


def _cfg(tmp_path, **kw):
    base = TrainConfig(model_kwargs=TINY, epochs=1, iters_per_epoch=6, batch_size=2,
                       patch_size=16, val_every=3, val_images=1, val_max_side=24, workers=0,
                       log_every=1,
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
    np.testing.assert_allclose([v for _, v in a], [v for _, v in b], rtol=1e-6)
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
        train(replace(cfg, resume=True, scale=3, patch_size=18))
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
    # under a time budget the progress (fraction of the budget spent) sets it, not steps
    g = [lr_factor(fast, 7, p) for p in np.linspace(0, 1, 101)]
    assert g[10] == pytest.approx(1.0) and g[-1] == pytest.approx(0.0, abs=1e-12)
    assert g[5] == pytest.approx(0.5) and all(x >= y for x, y in zip(g[10:], g[11:]))


class FakeClock:
    """perf_counter for amms_lib.train: every reading is 0.1 s after the previous one,
    so a budgeted run takes the same steps however busy the machine is."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        self.now += 0.1
        return self.now


def test_budgeted_run_reaches_its_peak_and_ends_at_its_floor(use_data, tmp_path, monkeypatch):
    monkeypatch.setattr("amms_lib.train.time", FakeClock())
    # the default 1000 x 1000 steps: laid over steps, 6 s would never leave warm-up
    cfg = _cfg(tmp_path, recipe="fast", lr=1e-3, epochs=1000, iters_per_epoch=1000,
               warmup=0.1, max_minutes=0.1, val_every=0, log_every=1)
    result = train(cfg)
    lrs = [r["lr"] for r in read_metrics(cfg.out_dir) if "lr" in r]
    assert 20 < result["step"] < 100 and result["seconds"] >= 6.0
    assert max(lrs) > 0.9 * cfg.lr  # reached its peak
    assert lrs[-1] < 0.01 * cfg.lr  # and its floor when the budget ended
    # resumed with a longer budget, the schedule goes on from the time already spent
    more = train(replace(cfg, resume=True, max_minutes=0.2))
    assert more["seconds"] >= 12.0 and result["step"] + 20 < more["step"] < 2 * result["step"] + 20
    again = train(replace(cfg, resume=True, max_minutes=0.2))  # budget spent: nothing to do
    assert again["step"] == more["step"]


def test_cli_takes_fractional_minutes_and_refuses_bad_settings(capsys):
    from amms_lib.train import _parse, main

    assert _parse(["--max-minutes", "0.5", "--stop-minutes", "2"]).max_minutes == 0.5
    for bad in (["--batch-size", "0"], ["--iters-per-epoch", "0"], ["--patch-size", "0"],
                ["--lr", "-1"], ["--lr", "nan"], ["--workers", "-1"], ["--epochs", "0"]):
        assert main(bad) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: "), (bad, err)


def test_no_training_data_is_refused_unless_builtin_is_asked_for(tmp_path, monkeypatch):
    monkeypatch.delenv("AMMS_DATA", raising=False)
    monkeypatch.setattr("amms_lib.data.repo_root", lambda: tmp_path)  # no data/ folder
    cfg = _cfg(tmp_path, train_sets=("T91", "BSD200"), val_every=0, iters_per_epoch=2)
    with pytest.raises(AmmsError, match="--train-sets skimage"):
        train(cfg)
    assert not (tmp_path / "run").exists()  # refused before any work
    monkeypatch.setattr("amms_lib.patches.repo_root", lambda: tmp_path)  # cache in tmp
    assert train(replace(cfg, train_sets=("skimage",)))["step"] == 2
    empty = tmp_path / "empty"
    (empty / "train" / "T91").mkdir(parents=True)
    monkeypatch.setenv("AMMS_DATA", str(empty))
    with pytest.raises(AmmsError, match="holds no images"):
        train(replace(cfg, train_sets=("T91",)))


def test_gpu_script_uses_the_papers_192_patches_at_every_scale(tmp_path):
    for scale in (2, 3, 4):
        out = subprocess.run(["bash", "scripts/train_gpu.sh"], capture_output=True, text=True,
                             env={**os.environ, "SCALE": str(scale), "PY": "echo"},
                             cwd=Path(__file__).resolve().parents[1], check=True).stdout
        assert "--patch-size 192 " in out, out


def test_data_path_does_not_import_checkpoints():
    code = "import sys, amms_lib.patches; print('amms_lib.checkpoint' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"


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


def test_images_smaller_than_the_patch_are_used_mirror_extended():
    small, large = _images(1, (40, 30))[0], _images(1, (100, 90))[0]
    hrs = [small, large]
    lrs = [imresize(h, 1 / 2, border="clamp") for h in hrs]
    ds = PatchDataset(hrs, lrs, scale=2, patch_size=64, seed=1, augment=False)
    assert len(ds.hrs) == 2 and ds.padded == 1 and "1 smaller than the patch" in ds.describe()
    assert ds.hrs[0].shape == (64, 64, 3) and ds.lrs[0].shape == (32, 32, 3)
    np.testing.assert_array_equal(ds.hrs[0][:40, :30], small)  # the image itself, kept
    np.testing.assert_array_equal(ds.hrs[0][40:64, :30], small[::-1][:24])  # its mirror
    # the LR of the extended image is remade from its HR, so pairs stay consistent
    np.testing.assert_array_equal(ds.lrs[0], imresize(ds.hrs[0], 1 / 2, border="clamp"))
    drawn = {int(np.random.default_rng((1, i)).integers(2)) for i in range(50)}
    assert drawn == {0, 1}  # both images are drawn
    for i in range(10):
        lr_p, hr_p = ds[i]
        assert lr_p.shape == (3, 32, 32) and hr_p.shape == (3, 64, 64)


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
            "--val-images", "1", "--val-max-side", "24", "--workers", "0", "--log-every", "1",
            "--device", "cpu",
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


def test_a_diverged_run_stops_with_one_clear_error_and_keeps_its_checkpoint(
        use_data, tmp_path, monkeypatch):
    import amms_lib.train as tr

    cfg = _cfg(tmp_path, iters_per_epoch=3)
    train(cfg)  # a good run: last.pt at step 3
    last = tmp_path / "run" / "last.pt"
    before = last.read_bytes()
    more = replace(cfg, iters_per_epoch=8, val_every=1, resume=True)
    real_loss = tr.F.l1_loss
    # 1. the loss turns NaN: the run stops before anything is saved
    monkeypatch.setattr(tr.F, "l1_loss", lambda a, b: real_loss(a, b) * float("nan"))
    with pytest.raises(AmmsError, match="diverged"):
        train(more)
    assert last.read_bytes() == before
    # 2. a finite loss with NaN gradients (what torch.compile + bf16 gave on the CPU): the
    #    weights go NaN, and the save that follows refuses to write them
    monkeypatch.setattr(tr.F, "l1_loss", real_loss)
    real_build = tr.build_model

    def poisoned(*args, **kwargs):
        net = real_build(*args, **kwargs)
        net.head.weight.register_hook(lambda g: g * float("nan"))
        return net

    monkeypatch.setattr(tr, "build_model", poisoned)
    with pytest.raises(AmmsError, match="diverged"):
        train(more)
    assert last.read_bytes() == before and read_checkpoint(last)["step"] == 3


def test_x3_starts_from_the_x2_body_with_a_new_upsampler(use_data, tmp_path):
    x2 = _cfg(tmp_path, out_dir=str(tmp_path / "x2"), iters_per_epoch=3)
    train(x2)
    src = read_checkpoint(tmp_path / "x2" / "last.pt")["state_dict"]
    x3 = _cfg(tmp_path, scale=3, patch_size=24, out_dir=str(tmp_path / "x3"),
              iters_per_epoch=1, val_every=0, init_from=str(tmp_path / "x2" / "last.pt"))
    from amms_lib.models import build_model
    from amms_lib.train import load_init_weights

    net = build_model("amms", 3, **TINY)
    fresh = {k: v.clone() for k, v in net.state_dict().items()}
    note = load_init_weights(net, x3)
    got = net.state_dict()
    body = [k for k in got if not k.startswith("re.0.")]  # all but the x3 sub-pixel conv
    assert all(torch.equal(got[k], src[k]) for k in body)
    assert all(torch.equal(got[k], fresh[k]) for k in got if k.startswith("re.0."))
    assert "new: re.0" in note
    assert train(x3)["step"] == 1
    with pytest.raises(AmmsError, match="model options"):
        load_init_weights(build_model("amms", 3, **{**TINY, "channels": 4}),
                  replace(x3, model_kwargs={**TINY, "channels": 4}))


def test_cpu_script_trains_the_small_config_resumably():
    from amms_lib.amms import AMMSConfig

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(["bash", "scripts/train_cpu.sh"], capture_output=True, text=True,
                         env={**os.environ, "SCALE": "4", "PY": "echo", "KWARGS": "K",
                              "INIT": "checkpoints/amms_x2.pt", "STOP": "50"},
                         cwd=root, check=True).stdout
    for flag in ("--patch-size 128 ", "--resume", "--init-from checkpoints/amms_x2.pt",
                 "--stop-minutes 50", "--cpu-amp", "--channels-last", "--model-kwargs K"):
        assert flag in out, (flag, out)
    kwargs = subprocess.run(
        ["bash", "-c", "source <(sed -n '/^KWARGS=/p' scripts/train_cpu.sh); echo $KWARGS"],
        capture_output=True, text=True, cwd=root, check=True,
        env={**os.environ, "PY": sys.executable}).stdout
    assert json.loads(kwargs) == AMMSConfig.small_kwargs()


def test_partial_last_log_line_is_skipped_on_resume_with_one_warning(use_data, tmp_path,
                                                                     capsys):
    cfg = _cfg(tmp_path, iters_per_epoch=4, val_every=2)
    train(cfg, stop_after=3)  # killed at step 3: last.pt is from step 2
    log = tmp_path / "run" / "metrics.jsonl"
    with open(log, "a") as f:
        f.write('{"step": 3, "lo')  # power lost while writing the next record
    capsys.readouterr()
    train(replace(cfg, resume=True))
    warnings = [ln for ln in capsys.readouterr().err.splitlines() if "warning" in ln]
    assert len(warnings) == 1 and "partial last line" in warnings[0]
    assert [s for s, _ in _losses(cfg.out_dir)] == [1, 2, 3, 4]
    log.write_text(log.read_text() + "garbage\n" + '{"step": 9}\n')
    with pytest.raises(AmmsError, match="damaged"):  # not the last line: not a cut-off
        read_metrics(cfg.out_dir)


def test_a_refused_resume_leaves_the_run_folder_as_it_was(use_data, tmp_path):
    """--resume on a damaged log is refused before anything is written: config.json
    (which would now say resume) and the log keep the earlier run's bytes."""
    cfg = _cfg(tmp_path, iters_per_epoch=4, val_every=2)
    train(cfg, stop_after=2)
    out = tmp_path / "run"
    (out / "metrics.jsonl").write_text("garbage\n" + (out / "metrics.jsonl").read_text())
    before = {n: (out / n).read_bytes() for n in ("config.json", "metrics.jsonl")}
    with pytest.raises(AmmsError, match="damaged"):
        train(replace(cfg, resume=True))
    assert {n: (out / n).read_bytes() for n in before} == before


def test_a_run_file_that_is_a_folder_is_refused_before_anything_is_written(use_data, tmp_path):
    cfg = _cfg(tmp_path, iters_per_epoch=4, val_every=2)
    train(cfg, stop_after=2)
    out = tmp_path / "run"
    (out / "metrics.jsonl").unlink()
    (out / "metrics.jsonl").mkdir()
    before = (out / "config.json").read_bytes()
    with pytest.raises(AmmsError, match="metrics.jsonl should be a file"):
        train(replace(cfg, resume=True))
    assert (out / "config.json").read_bytes() == before


def test_overwrite_with_a_bad_init_from_keeps_the_earlier_run(use_data, tmp_path):
    """--overwrite clears the folder only once the run can start: a missing, damaged or
    other-model --init-from is refused with the earlier run still there."""
    cfg = _cfg(tmp_path, iters_per_epoch=2, val_every=2)
    train(cfg)
    out = tmp_path / "run"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes((out / "last.pt").read_bytes()[:1000])
    for bad in (tmp_path / "nope.pt", damaged):
        with pytest.raises(AmmsError):
            train(replace(cfg, overwrite=True, init_from=str(bad)))
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_run_keeps_its_origin_and_overwrite_keeps_its_start(use_data, tmp_path):
    """--resume keeps the run's --init-from (another one is refused: it would not change the
    weights, only the record); --overwrite cannot start from a file it would delete."""
    first = _cfg(tmp_path, iters_per_epoch=2, val_every=2, out_dir=str(tmp_path / "first"))
    train(first)
    start = str(tmp_path / "first" / "last.pt")
    cfg = _cfg(tmp_path, iters_per_epoch=4, val_every=2, init_from=start)
    train(cfg, stop_after=2)
    train(replace(cfg, resume=True, init_from=""))  # resumed without repeating it
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["init_from"] == start  # the record still says where it started
    with pytest.raises(AmmsError, match="would not change its weights"):
        train(replace(cfg, resume=True, init_from=str(tmp_path / "first" / "best.pt")))
    run = tmp_path / "run"
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    with pytest.raises(AmmsError, match="a file of the run --overwrite would delete"):
        train(replace(cfg, overwrite=True, init_from=str(run / "best.pt")))
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    # a user's own file in the folder is not one --overwrite deletes: it may start the run
    (run / "keep_best.pt").write_bytes((run / "best.pt").read_bytes())
    assert train(replace(cfg, overwrite=True, init_from=str(run / "keep_best.pt")))["step"] > 0
    assert (run / "keep_best.pt").is_file()


def dead_pid() -> int:
    """The pid of a process that has exited (what a killed run leaves in its temp names)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temp_files_of_a_killed_save_are_removed_by_the_next_run(use_data, tmp_path,
                                                                 capsys):
    run = tmp_path / "run"
    run.mkdir()
    dead = dead_pid()
    left = [f".last.pt.amms-tmp-{dead}.k2j4x8aa", f".best.pt.amms-tmp-{dead}.q9w0e1rr",
            f".config.json.amms-tmp-{dead}.zz00yy11"]
    for name in left:  # atomic_write's temp names, as a kill leaves them
        (run / name).write_bytes(b"x" * 1000)
    kept = [".notes", ".last.pt.k2j4x8aa",  # not ours: no pid tag
            f".last.pt.amms-tmp-{os.getppid()}.abcdefgh",  # a live writer's
            f".notes.txt.amms-tmp-{dead}.abcdefgh"]  # not one of a run's files
    for name in kept:
        (run / name).write_text("mine")
    train(_cfg(tmp_path, iters_per_epoch=2, val_every=0))
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == sorted(
        kept)
    assert "removed 3 temp file(s)" in capsys.readouterr().err


@pytest.mark.parametrize("kw,match", [(dict(scale=5, patch_size=40), "scale 5"),
                                      (dict(model="srgan"), "unknown model 'srgan'")])
def test_config_check_refuses_a_bad_scale_or_model(kw, match):
    with pytest.raises(AmmsError, match=match):
        TrainConfig(**kw).check()


# -- nothing a user already has is lost: run folders, locks, resume, bad input ---------------

def test_a_new_run_never_replaces_an_earlier_runs_results(use_data, tmp_path):
    cfg = _cfg(tmp_path, iters_per_epoch=3)
    train(cfg)
    run = tmp_path / "run"
    before = {n: (run / n).read_bytes() for n in ("best.pt", "last.pt", "metrics.jsonl")}
    with pytest.raises(AmmsError, match="holds an earlier run.*--resume.*--overwrite"):
        train(cfg)
    assert {n: (run / n).read_bytes() for n in before} == before
    (run / "last.pt").unlink()  # --resume with nothing to resume from: says so
    with pytest.raises(AmmsError, match="no last.pt to continue from"):
        train(replace(cfg, resume=True))
    assert (run / "best.pt").read_bytes() == before["best.pt"]
    assert train(replace(cfg, overwrite=True))["step"] == 3  # asked for: starts over
    fresh = tmp_path / "fresh"  # an empty folder: --resume starts a new run, saying so
    assert train(replace(cfg, resume=True, out_dir=str(fresh)))["step"] == 3


@pytest.mark.parametrize("change", [dict(seed=1), dict(batch_size=3), dict(lr=2e-4),
                                    dict(recipe="fast"), dict(patch_size=24),
                                    dict(val_set="Set5"), dict(val_max_side=0)])
def test_resume_refuses_settings_that_change_the_run(use_data, tmp_path, change):
    cfg = _cfg(tmp_path, iters_per_epoch=2, val_every=0)
    train(cfg)
    key = next(iter(change))
    with pytest.raises(AmmsError, match=f"trained with {key}="):
        train(replace(cfg, resume=True, iters_per_epoch=4, **change))
    assert read_checkpoint(tmp_path / "run" / "last.pt")["step"] == 2


def test_a_second_writer_is_refused_while_the_first_holds_the_folder(use_data, tmp_path):
    from amms_lib.runtime import FolderLock

    cfg = _cfg(tmp_path, iters_per_epoch=2, val_every=0)
    with FolderLock(tmp_path / "run", "training"):  # another process's run, in effect
        with pytest.raises(AmmsError, match="in use by another training"):
            train(cfg)
        assert not (tmp_path / "run" / "metrics.jsonl").exists()
    assert train(cfg)["step"] == 2  # released: the next run goes ahead
    code = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDONLY); "
            "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "run")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(AmmsError, match="in use"):
            train(replace(cfg, resume=True, iters_per_epoch=4))
    finally:
        holder.kill()
        holder.wait()
    assert train(replace(cfg, resume=True, iters_per_epoch=4))["step"] == 4  # lock died


@pytest.mark.parametrize("kw,match", [
    (dict(val_set="Set6"), "val_set 'Set6' not found"),
    (dict(val_max_side=4), "too small for SSIM"),
    (dict(model_kwargs={"channels": 4.5}), "do not build"),
    (dict(model_kwargs={"scale": 3}), "use --scale"),
    (dict(model_kwargs=[1, 2]), "JSON object"),
    (dict(lr=1e300), "lr must be"),
    (dict(threads=100000), "cores"),
    (dict(resume=True, overwrite=True), "choose one"),
])
def test_settings_that_cannot_train_fail_before_any_step(use_data, tmp_path, kw, match):
    cfg = _cfg(tmp_path, **kw)
    with pytest.raises(AmmsError, match=match):
        train(cfg)
    assert not (tmp_path / "run").exists()


def test_cli_gives_one_line_for_bad_input_and_130_for_ctrl_c(use_data, tmp_path, capsys,
                                                            monkeypatch):
    from amms_lib.train import main

    afile = tmp_path / "afile"
    afile.write_text("x")
    base = ["--train-sets", "T91", "--epochs", "1", "--iters-per-epoch", "1",
            "--batch-size", "2", "--patch-size", "16", "--workers", "0",
            "--model-kwargs", json.dumps(TINY)]
    for bad in (["--out-dir", str(afile)], ["--device", "mps"], ["--device", "tpu"],
                ["--model-kwargs", "[1,2]"], ["--threads", "100000"]):
        code = main(base + ["--out-dir", str(tmp_path / "o")] + bad)
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) <= 2 and "Traceback" not in "".join(err), (bad, err)
        assert err[-1].startswith(("error: ", "usage: ")) or "error:" in err[-1], (bad, err)

    import amms_lib.train as train_module

    def interrupted(cfg, opened):
        if opened:  # Ctrl-C once the folder was ours (--overwrite had cleared it)
            train_module._OPENED.add(cfg.out_dir)
        raise KeyboardInterrupt

    for opened, said in ((False, "interrupted before it began (while the training data "
                                 "loaded)"), (True, "interrupted before its first checkpoint")):
        monkeypatch.setattr("amms_lib.train.train", lambda cfg: interrupted(cfg, opened))
        assert main(base + ["--out-dir", str(tmp_path / f"o{opened}")]) == 130
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and said in err[0], err


def test_resume_and_init_from_weights_only_checkpoints_say_what_is_missing(use_data,
                                                                          tmp_path):
    from amms_lib.checkpoint import save_checkpoint
    from amms_lib.models import build_model

    weights = tmp_path / "w.pt"
    save_checkpoint(weights, build_model("amms", 2, **TINY), name="amms", scale=2,
                    model_kwargs=TINY)  # no step, optimizer or rng: as shipped weights
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(weights.read_bytes())
    with pytest.raises(AmmsError, match="weights only.*--init-from"):
        train(_cfg(tmp_path, resume=True))
    cfg = _cfg(tmp_path, out_dir=str(tmp_path / "new"), init_from=str(weights),
               iters_per_epoch=1, val_every=0)
    assert train(cfg)["step"] == 1


def test_a_damaged_log_or_lr_cache_is_one_clear_line(use_data, tmp_path, capsys):
    cfg = _cfg(tmp_path, iters_per_epoch=2, val_every=0)
    train(cfg)
    log = tmp_path / "run" / "metrics.jsonl"
    good = log.read_text()
    for bad in ("[1, 2]\n", '{"loss": 1}\n'):
        log.write_text(bad + good)
        with pytest.raises(AmmsError, match="not a JSON object with a step"):
            read_metrics(cfg.out_dir)
    log.write_bytes(b"\xff\xfe\x00garbage\n" + good.encode())
    with pytest.raises(AmmsError, match="not a text file"):
        read_metrics(cfg.out_dir)
    cache = tmp_path / "cache"
    files = [p for p in sorted((use_data / "train" / "T91").glob("*.png"))
             if p.stem not in data.HELDOUT_IMAGES["T91"]][:2]  # (t1 is held out)
    hrs, _, key = load_pairs(files, 2, cache_dir=cache)
    (cache / f"train_x2_{key}.pt").write_bytes(b"not a torch file")
    capsys.readouterr()
    again, _, _ = load_pairs(files, 2, cache_dir=cache)
    assert "damaged LR cache" in capsys.readouterr().err
    assert all(np.array_equal(a, b) for a, b in zip(hrs, again))
    assert load_pairs(files, 2, cache_dir=cache)[2] == key  # rebuilt: it loads again
    # a loadable file that does not fit (one HR, no LR) had passed and failed at the first
    # batch, after --overwrite had cleared the earlier run
    torch.save({"hr": [torch.zeros(40, 40, 3, dtype=torch.uint8)], "lr": []},
               cache / f"train_x2_{key}.pt")
    again, lrs, _ = load_pairs(files, 2, cache_dir=cache)
    assert "damaged LR cache (ValueError)" in capsys.readouterr().err
    assert len(again) == len(lrs) == 2 and all(np.array_equal(a, b) for a, b in zip(hrs, again))
    # a folder at the cache's path: a warning, and the pairs all the same
    (cache / f"train_x2_{key}.pt").unlink()
    (cache / f"train_x2_{key}.pt").mkdir()
    assert len(load_pairs(files, 2, cache_dir=cache)[0]) == 2
    assert "the LR cache could not be written" in capsys.readouterr().err


def test_a_full_disk_during_a_save_is_one_error_and_keeps_the_last_checkpoint(
        use_data, tmp_path, monkeypatch):
    import errno

    import amms_lib.train as tr

    cfg = _cfg(tmp_path, iters_per_epoch=2, val_every=0)
    train(cfg)
    last = tmp_path / "run" / "last.pt"
    before = last.read_bytes()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tr, "save_checkpoint", full)
    with pytest.raises(AmmsError, match="No space left.*--resume"):
        train(replace(cfg, resume=True, iters_per_epoch=4))
    assert last.read_bytes() == before


def test_held_out_images_never_reach_a_training_patch(use_data):
    from amms_lib import data
    from amms_lib.patches import train_files

    held = data.list_images(data.HELDOUT)
    assert len(held) == 15 and not data.incomplete(data.HELDOUT)
    files = train_files()
    assert not {f.stem for f in files} & set(held)
    assert len(files) == 91 + 200 - 15
    # by content, not only by name: no training image is a held-out one
    from amms_lib.images import as_rgb

    held_hr = {as_rgb(data.modcrop(data.load_hr(data.HELDOUT, n), 2)).tobytes() for n in held}
    hrs, _, _ = load_pairs(files, 2)
    assert len(hrs) == len(files) and not any(h.tobytes() in held_hr for h in hrs)
    assert TrainConfig().val_set == data.HELDOUT  # the default selects on it


def test_check_cost_prints_the_estimate_and_refuses_over_max_hours(monkeypatch, capsys):
    from amms_lib import quick as train_mod

    monkeypatch.setattr(train_mod, "measure_step_seconds", lambda cfg, steps=3: 0.5)
    cfg = TrainConfig(model="srcnn", epochs=2, iters_per_epoch=3600, device="cpu")
    assert train_mod.check_cost(cfg, runs=2, max_hours=2.5) == pytest.approx(2.0)
    assert "2 x 7,200 steps x 0.500 s = 120.0 minutes" in capsys.readouterr().out
    with pytest.raises(AmmsError, match=r"2.0 hours on cpu, over max_hours 1: pass -p "
                                        r"max_hours 3 to run it anyway"):
        train_mod.check_cost(cfg, runs=2, max_hours=1)
    for bad in (0, -1, float("nan")):
        with pytest.raises(AmmsError, match="max_hours must be a positive number"):
            train_mod.check_cost(cfg, max_hours=bad)


def test_mode_config_gives_each_mode_its_defaults_and_keeps_what_is_given():
    from amms_lib import runtime
    from amms_lib.amms import AMMSConfig
    from amms_lib.quick import mode_config

    quick = mode_config(True, "amms", 2, device="cpu")
    assert quick.model_kwargs == {**AMMSConfig.small_kwargs()} and not quick.init_from
    assert (quick.total_steps, quick.patch_size, quick.recipe, quick.lr) == (300, 64, "fast",
                                                                             1e-3)
    # x3/x4 start from the shipped x2 body: its configuration, 150 steps at 5e-4
    x3 = mode_config(True, "amms", 3, device="cpu")
    assert x3.init_from.endswith("checkpoints/amms_x2.pt")
    assert x3.model_kwargs == dict(channels=48, n_amms=2, n_am=1)
    assert (x3.total_steps, x3.patch_size, x3.lr) == (150, 96, 5e-4)
    off = mode_config(True, "amms", 4, ideas=dict(non_local=False), device="cpu")
    assert not off.init_from and off.total_steps == 300  # another network: from scratch
    assert mode_config(True, "amms", 4, channels=16, device="cpu").init_from == ""
    assert mode_config(True, "srcnn", 2, device="cpu").lr == 5e-4  # not swept at its size
    assert mode_config(True, "amms", 2, recipe="paper", device="cpu").lr == 1e-4
    assert quick.cpu_amp == runtime.cpu_bf16() and quick.channels_last and quick.val_images == 2
    full = mode_config(False, "amms", 2, device="cpu")
    assert full.model_kwargs == dict(channels=64, n_amms=4, n_am=2)
    assert (full.total_steps, full.patch_size, full.recipe, full.lr) == (10**6, 192, "paper",
                                                                         1e-4)
    assert not full.cpu_amp and full.val_images == 0
    given = mode_config(True, "amms", 2, channels=8, epochs=2, lr=1e-3, recipe="paper",
                        ideas=dict(non_local=False), seed=7, device="cpu")
    assert given.model_kwargs["channels"] == 8 and not given.model_kwargs["non_local"]
    assert (given.total_steps, given.lr, given.recipe, given.seed) == (600, 1e-3, "paper", 7)
    assert mode_config(True, "vdsr", 2, device="cpu").model_kwargs == dict(depth=6)
    with pytest.raises(AmmsError, match="channels and n_amms"):
        mode_config(True, channels=-1)
    with pytest.raises(AmmsError, match="scale 5"):
        mode_config(True, "amms", 5)


def test_the_quick_learning_rate_is_the_one_the_held_out_sweep_chose():
    """``quick.QUICK_LR`` is the rate the equal-budget study chose for the compact AMMS on the
    held-out split (its record), not a number picked by hand or on a test set."""
    import json

    from amms_lib.quick import QUICK_LR
    from amms_lib.runtime import repo_root

    record = json.loads((repo_root() / "benchmarks" / "results" / "table2_cpu.json").read_text())
    sweep = record["models"]["amms"]["lr_sweep"]
    best = max(sweep["heldout_psnr"], key=sweep["heldout_psnr"].get)
    assert QUICK_LR["amms"] == sweep["chosen"] == float(best)


def test_cpu_autocast_only_where_the_cpu_computes_bf16(monkeypatch, capsys):
    # emulated bf16 was 8x slower than float32 on an AVX2 EPYC: --cpu-amp falls back, saying so
    from amms_lib import quick
    from amms_lib import train_config as train_mod

    cfg = train_mod.TrainConfig(model="srcnn", scale=2, cpu_amp=True)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(train_mod, "cpu_bf16", lambda: True)
    assert train_mod.use_autocast(cfg, cpu, say=True) and not capsys.readouterr().err
    monkeypatch.setattr(train_mod, "cpu_bf16", lambda: False)
    assert not train_mod.use_autocast(cfg, cpu, say=True)
    err = capsys.readouterr().err
    assert "no native bf16" in err and "training in float32" in err
    assert train_mod.use_autocast(cfg, cuda)  # CUDA: amp whatever the CPU
    assert not train_mod.use_autocast(train_mod.TrainConfig(model="srcnn", scale=2), cpu)
    monkeypatch.setattr(quick, "cpu_bf16", lambda: False)
    assert not quick.mode_config(True, "srcnn", 2, device="cpu").cpu_amp


def test_weight_average_follows_its_formula_and_resumes_exactly(use_data, tmp_path):
    """ema.pt against the formula w_ema <- d w_ema + (1 - d) w, folded in float64 over the
    weights of runs stopped after 1..6 steps (the paper recipe: the lr does not depend on
    the run's length, so a k-step run is the first k steps of the 6-step one)."""
    d = 0.6
    weights = []
    for k in range(1, 7):
        run = tmp_path / f"k{k}"
        train(_cfg(tmp_path, recipe="paper", iters_per_epoch=k, val_every=0, out_dir=str(run)))
        weights.append(read_checkpoint(run / "last.pt")["state_dict"])
    ref = {k: v.double() for k, v in weights[0].items()}  # the first update copies
    for w in weights[1:]:
        ref = {k: d * ref[k] + (1 - d) * w[k].double() for k in ref}
    whole = _cfg(tmp_path, recipe="paper", ema=d, out_dir=str(tmp_path / "whole"))
    train(whole)
    got = read_checkpoint(tmp_path / "whole" / "ema.pt")
    assert got["step"] == 6 and "optimizer" not in got and got["precision"] == "float32"
    for k, v in ref.items():
        np.testing.assert_allclose(got["state_dict"][k].double(), v, rtol=1e-5, atol=1e-7)
    assert not torch.equal(got["state_dict"]["head.weight"], weights[-1]["head.weight"])
    vals = [r for r in read_metrics(whole.out_dir) if "psnr" in r]
    assert [r["step"] for r in vals] == [3, 6] and all("psnr_ema" in r for r in vals)
    assert got["metrics"]["psnr"] == vals[-1]["psnr_ema"]
    killed = _cfg(tmp_path, recipe="paper", ema=d, out_dir=str(tmp_path / "killed"))
    train(killed, stop_after=5)  # the last checkpoint (and average) is from step 3
    train(replace(killed, resume=True))
    again = read_checkpoint(tmp_path / "killed" / "ema.pt")["state_dict"]
    for k, v in got["state_dict"].items():
        np.testing.assert_allclose(again[k], v, rtol=1e-6)
    with pytest.raises(AmmsError, match="ema is a decay"):
        train(_cfg(tmp_path, ema=1.0, out_dir=str(tmp_path / "bad")))
    # registered with --ema: the average's weights, its own curve, and how it was chosen
    import runpy

    register_run = runpy.run_path(str(Path(__file__).parents[1] / "scripts" / "register_run.py"),
                                  run_name="imported")
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    assert register_run["main"]([whole.out_dir, "--ema", "--command", "train --ema 0.6",
                                 "--folder", str(folder), "--commit", "abc"]) == 0
    meta = json.loads((folder / "metadata.json").read_text())["amms_x2.pt"]
    assert meta["selection"].startswith("final average of the weights (decay 0.6")
    assert (meta["val_images"], meta["val_max_side"]) == (whole.val_images, whole.val_max_side)
    assert meta["data"] == "T91 without heldout"
    assert (meta["lr"], meta["precision"]) == (whole.lr, "float32")
    assert [p for _, p in meta["curve"]] == [round(r["psnr_ema"], 4) for r in vals]
    shipped = read_checkpoint(folder / "amms_x2.pt")["state_dict"]
    assert torch.equal(shipped["head.weight"], got["state_dict"]["head.weight"])
    # started from weights never registered (a study's kept x2): their own steps and minutes
    x3 = _cfg(tmp_path, scale=3, patch_size=24, iters_per_epoch=1, val_every=1,
              out_dir=str(tmp_path / "x3"), init_from=str(tmp_path / "whole" / "ema.pt"))
    train(x3)
    assert register_run["main"]([x3.out_dir, "--last", "--command", "train x3",
                                 "--folder", str(folder), "--commit", "abc"]) == 0
    meta3 = json.loads((folder / "metadata.json").read_text())["amms_x3.pt"]
    assert meta3["init_step"] == 6 and meta3["init_minutes"] == round(got["seconds"] / 60, 1)
    assert meta3["init_from"] == str((tmp_path / "whole" / "ema.pt").resolve())
    # a starting point whose record says 0.0 minutes keeps 0.0 (it had fallen through to
    # the file's own seconds, or to null without them)
    start = tmp_path / "start"
    start.mkdir()
    torch.save({**read_checkpoint(tmp_path / "whole" / "ema.pt"), "seconds": 600.0},
               start / "s.pt")
    from amms_lib.checkpoint import origin_record
    from amms_lib.runtime import file_sha256

    (start / "metadata.json").write_text(json.dumps(
        {"s.pt": {"train_minutes": 0.0, "sha256": file_sha256(start / "s.pt")}}))
    assert origin_record(start / "s.pt")["minutes"] == 0.0


def test_register_run_says_in_one_line_what_is_wrong_with_a_run_folder(use_data, tmp_path,
                                                                       capsys):
    """A folder without its curve, with a config that is not one, or holding another scale's
    weights: one error line and exit 2, nothing registered."""
    import runpy
    import shutil

    register_run = runpy.run_path(str(Path(__file__).parents[1] / "scripts" / "register_run.py"),
                                  run_name="imported")
    cfg = _cfg(tmp_path, iters_per_epoch=2, val_every=2)
    train(cfg)
    run, folder = Path(cfg.out_dir), tmp_path / "checkpoints"
    folder.mkdir()
    args = [str(run), "--command", "x", "--folder", str(folder), "--commit", "abc"]
    cases = {"metrics.jsonl is missing": lambda: (run / "metrics.jsonl").unlink(),
             "holds no run configuration": lambda: (run / "config.json").write_text("[1, 2]"),
             "is an x3 checkpoint": lambda: shutil.copy(x3 / "best.pt", run / "best.pt")}
    x3cfg = _cfg(tmp_path, scale=3, patch_size=24, iters_per_epoch=1, val_every=1,
                 out_dir=str(tmp_path / "x3"))
    train(x3cfg)
    x3 = Path(x3cfg.out_dir)
    saved = {n: (run / n).read_bytes() for n in ("metrics.jsonl", "config.json", "best.pt")}
    capsys.readouterr()  # the trainings' own output
    for message, damage in cases.items():
        damage()
        assert register_run["main"](args) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and err.count("\n") == 1, err
        assert not (folder / "metadata.json").exists()
        for n, b in saved.items():
            (run / n).write_bytes(b)


def test_register_run_keeps_an_unrecorded_file_and_names_the_set_it_scored(tmp_path, capsys,
                                                                          monkeypatch):
    """Without a data folder a run validates on the built-in images: the record says so.
    A file already under the name without a record is never replaced unasked; a file as
    --folder is one line."""
    import runpy

    monkeypatch.delenv("AMMS_DATA", raising=False)
    monkeypatch.setattr(data, "repo_root", lambda: tmp_path)  # no data/ there either
    register_run = runpy.run_path(str(Path(__file__).parents[1] / "scripts" / "register_run.py"),
                                  run_name="imported")
    cfg = _cfg(tmp_path, iters_per_epoch=2, val_every=2, train_sets=("skimage",))
    train(cfg)
    # the commit is this library's checkout's, even in a folder of another git repository
    # (that repository's HEAD had been recorded as the training commit)
    from amms_lib import runtime

    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=x", "-c", "user.email=x@x",
                    "commit", "-q", "--allow-empty", "-m", "other"], check=True)
    args = [cfg.out_dir, "--command", "x", "--folder", str(repo / "weights")]
    assert register_run["main"](args) == 0
    meta = json.loads((repo / "weights" / "metadata.json").read_text())["amms_x2.pt"]
    assert meta["commit"] == runtime.code_commit(runtime.repo_root()) != "unknown"
    # the commit the run recorded when it trained, not the one checked out at registration
    best = Path(cfg.out_dir) / "best.pt"
    ckpt = read_checkpoint(best)
    assert ckpt["commit"] == meta["commit"]
    torch.save({**ckpt, "commit": "abc1234"}, best)
    args = [cfg.out_dir, "--command", "x", "--folder", str(repo / "w2")]
    assert register_run["main"](args) == 0
    assert json.loads((repo / "w2" / "metadata.json").read_text())["amms_x2.pt"]["commit"] \
        == "abc1234"
    torch.save({k: v for k, v in ckpt.items() if k != "commit"}, best)  # an older run's
    monkeypatch.setattr(runtime, "repo_root", lambda: tmp_path)  # a copy outside git
    folder = tmp_path / "ck"
    args = [cfg.out_dir, "--command", "x", "--folder", str(folder)]
    assert register_run["main"](args) == 0
    meta = json.loads((folder / "metadata.json").read_text())["amms_x2.pt"]
    assert meta["val_set"] == data.BUILTIN and meta["commit"] == "unknown"
    err = capsys.readouterr().err
    assert "is not a git checkout" in err
    other = tmp_path / "other"
    other.mkdir()
    (other / "amms_x2.pt").write_bytes((folder / "amms_x2.pt").read_bytes())  # no record
    before = (other / "amms_x2.pt").read_bytes()
    assert register_run["main"]([cfg.out_dir, "--command", "x", "--folder", str(other)]) == 2
    assert "no record of it" in capsys.readouterr().err
    assert (other / "amms_x2.pt").read_bytes() == before and not (other / "metadata.json").exists()
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    for bad in (blocker, blocker / "sub"):
        assert register_run["main"]([cfg.out_dir, "--command", "x", "--folder", str(bad)]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and err.count("\n") == 1, err


@pytest.mark.parametrize("change, says", [
    (dict(workers=100_000), "at most 64 data-loading"),
    (dict(batch_size=60_000, patch_size=32), "megapixels per step"),
    (dict(patch_size=100_000), "megapixels per step")])
def test_sizes_that_would_exhaust_the_machine_are_refused_first(tmp_path, change, says):
    cfg = _cfg(tmp_path, **change)
    with pytest.raises(AmmsError, match=says):
        cfg.check()
    with pytest.raises(AmmsError, match=says):
        train(cfg)
    assert not (tmp_path / "run").exists()  # nothing left behind to refuse the next run


def test_tqdm_disable_reaches_the_training_bar(use_data, tmp_path, monkeypatch):
    """tqdm's notebook bars ignore TQDM_DISABLE, and papermill stores a live bar frozen at
    0%: train passes the variable to its bar itself."""
    import amms_lib.train as tr

    seen = []
    real = tr.tqdm

    def recording(*args, **kwargs):
        seen.append(kwargs.get("disable"))
        return real(*args, **kwargs)
    monkeypatch.setattr(tr, "tqdm", recording)
    monkeypatch.setenv("TQDM_DISABLE", "1")
    train(_cfg(tmp_path, iters_per_epoch=1, val_every=0))
    monkeypatch.setenv("TQDM_DISABLE", "0")
    train(_cfg(tmp_path, iters_per_epoch=1, val_every=0, out_dir=str(tmp_path / "b")))
    assert seen == [True, False]


def test_a_stop_between_the_checkpoint_writes_leaves_a_consistent_best(use_data, tmp_path,
                                                                         monkeypatch):
    """Killed after a new best's first write: last.pt had recorded the new best while
    best.pt still held the old one, and a resumed run never replaced it (registration
    then said 'best of N validations' for the older weights). best.pt is written first,
    and registration refuses a best.pt that is not the curve's best."""
    import runpy

    import amms_lib.train as train_module

    cfg = _cfg(tmp_path, val_every=1, iters_per_epoch=4, lr=1e-3)
    real, writes = train_module.save_checkpoint, []

    def killed_at_step_3(path, *a, **k):
        writes.append((Path(path).name, k["step"]))
        if Path(path).name == "last.pt" and k["step"] == 3:
            raise KeyboardInterrupt  # between the writes of a validation
        return real(path, *a, **k)

    monkeypatch.setattr(train_module, "save_checkpoint", killed_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    firsts = [name for name, step in writes if step == 1]
    assert firsts[0] == "best.pt" and "last.pt" in firsts  # best first
    monkeypatch.setattr(train_module, "save_checkpoint", real)
    train(replace(cfg, resume=True))
    scores = [r["psnr"] for r in read_metrics(cfg.out_dir) if "psnr" in r]
    assert [r["step"] for r in read_metrics(cfg.out_dir) if "psnr" in r] == [1, 2, 3, 4]
    assert read_checkpoint(Path(cfg.out_dir) / "best.pt")["metrics"]["psnr"] == max(scores)
    register_run = runpy.run_path(str(Path(__file__).parents[1] / "scripts" / "register_run.py"),
                                  run_name="imported")
    args = SimpleNamespace(ema=False, last=False, selection=None, device="cpu")
    register_run["record"](Path(cfg.out_dir), args)  # consistent: accepted
    stale = read_checkpoint(Path(cfg.out_dir) / "best.pt")  # a best.pt behind its curve
    from amms_lib.runlog import append_log  # stopped after logging a better validation,
    append_log(Path(cfg.out_dir) / "metrics.jsonl",  # before writing it as best.pt
               {"step": 5, "seconds": 1.0, **{**stale["metrics"], "psnr": max(scores) + 1}})
    with pytest.raises(AmmsError, match="stopped between writes; finish it with --resume"):
        register_run["record"](Path(cfg.out_dir), args)


def test_a_resume_without_the_data_folder_is_refused(use_data, tmp_path, monkeypatch):
    """Resumed without AMMS_DATA, validation had switched from the held-out images to the
    built-in ones, and best.pt was chosen across both sets."""
    cfg = _cfg(tmp_path, iters_per_epoch=4, val_every=2, train_sets=("skimage",))
    train(replace(cfg, iters_per_epoch=2))
    assert {r["val_set"] for r in read_metrics(cfg.out_dir) if "psnr" in r} == {data.HELDOUT}
    before = (Path(cfg.out_dir) / "config.json").read_text()
    monkeypatch.delenv("AMMS_DATA")
    monkeypatch.setattr(data, "repo_root", lambda: tmp_path)  # no data/ there either
    with pytest.raises(AmmsError, match="validated on 'heldout', this one would on 'skimage'"):
        train(replace(cfg, resume=True))
    assert (Path(cfg.out_dir) / "config.json").read_text() == before


def test_a_partial_held_out_split_is_refused(data_dir, tmp_path, monkeypatch):
    """With train/T91 only, validation had scored 5 of the 15 held-out images and the run's
    record said the whole split (21.78 dB against 22.70 on all 15)."""
    import shutil

    shutil.copytree(data_dir / "train" / "T91", tmp_path / "train" / "T91")
    monkeypatch.setenv("AMMS_DATA", str(tmp_path))
    with pytest.raises(AmmsError, match=r"held-out split is not whole \(10 image\(s\)"):
        _cfg(tmp_path, train_sets=("T91",)).check()


def test_a_resume_on_other_validation_pixels_is_refused(data_dir, tmp_path, monkeypatch):
    """Resumed with AMMS_DATA at a copy whose validation images were edited (a set of the
    user's own: no known pixels, no SHA256SUMS): the curve had jumped from 24.12 to 31.46
    dB under the same set name."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(data_dir / "train", copy / "train")
    shutil.copytree(data_dir / "benchmark/Set5/HR", copy / "benchmark/Mine/HR")
    monkeypatch.setenv("AMMS_DATA", str(copy))
    cfg = _cfg(tmp_path, iters_per_epoch=2, val_every=2, val_set="Mine")
    train(cfg)
    first = [r for r in read_metrics(cfg.out_dir) if "psnr" in r][0]
    path = copy / "benchmark/Mine/HR/baby.png"
    img = read_image(path)
    img[:] = img[:, ::-1].copy()  # mirrored: same size, other pixels
    write_image(path, img)
    with pytest.raises(AmmsError, match="validated on other Mine images"):
        train(replace(cfg, resume=True, iters_per_epoch=4))
    assert first["val_pixels"] and read_checkpoint(Path(cfg.out_dir) / "last.pt")["step"] == 2


def test_validation_on_an_edited_standard_set_is_refused(data_dir, tmp_path, monkeypatch):
    """--val-set Set5 on a Set5 the benchmark refuses had trained and recorded its scores."""
    import shutil

    if not (data_dir / "SHA256SUMS").is_file():
        pytest.skip("the data folder has no SHA256SUMS")
    shutil.copytree(data_dir / "benchmark/Set5", tmp_path / "benchmark/Set5")
    shutil.copytree(data_dir / "train", tmp_path / "train")
    (tmp_path / "SHA256SUMS").write_text((data_dir / "SHA256SUMS").read_text())
    monkeypatch.setenv("AMMS_DATA", str(tmp_path))
    _cfg(tmp_path, val_set="Set5").check()  # untouched: fine
    hr = tmp_path / "benchmark/Set5/HR/bird.png"
    img = read_image(hr)
    img[:3] = 0
    write_image(hr, img)
    with pytest.raises(AmmsError, match="val_set Set5: not the standard set"):
        _cfg(tmp_path, val_set="Set5").check()


def test_a_run_resumed_under_other_code_records_both_commits(use_data, tmp_path,
                                                              monkeypatch):
    """Trained with uncommitted changes, resumed on clean code: the record had named only
    the second commit."""
    import amms_lib.train as train_module

    cfg = _cfg(tmp_path, iters_per_epoch=2, val_every=2)
    monkeypatch.setattr(train_module, "_commit", lambda: "abc1234+dirty")
    train(cfg)
    assert read_checkpoint(Path(cfg.out_dir) / "last.pt")["commit"] == "abc1234+dirty"
    monkeypatch.setattr(train_module, "_commit", lambda: "def5678")
    train(replace(cfg, resume=True, iters_per_epoch=4))
    assert read_checkpoint(Path(cfg.out_dir) / "last.pt")["commit"] == \
        "abc1234+dirty, then def5678"
    train(replace(cfg, overwrite=True))  # a new run in the folder: its own commit alone
    assert read_checkpoint(Path(cfg.out_dir) / "last.pt")["commit"] == "def5678"


def test_register_run_without_the_runs_data_folder_is_refused(use_data, tmp_path, capsys,
                                                             monkeypatch):
    """Without AMMS_DATA the old and new checkpoints had been compared on the built-in
    images, and a better registered file replaced by a worse one."""
    import runpy

    register_run = runpy.run_path(str(Path(__file__).parents[1] / "scripts" / "register_run.py"),
                                  run_name="imported")
    cfg = _cfg(tmp_path, iters_per_epoch=2, val_every=2)
    train(cfg)
    monkeypatch.delenv("AMMS_DATA")
    monkeypatch.setattr(data, "repo_root", lambda: tmp_path)  # no data/ there either
    folder = tmp_path / "ck"
    assert register_run["main"]([cfg.out_dir, "--command", "x", "--folder", str(folder)]) == 2
    assert "needs the data folder it trained with" in capsys.readouterr().err
    assert not folder.exists() or not (folder / "metadata.json").exists()


def test_a_copy_of_a_held_out_image_is_never_trained_on(data_dir, tmp_path):
    """A renamed copy of held-out image 100075 in train/BSD200 had been cut into patches
    while validation, on that same image, was recorded as held-out."""
    import shutil

    copy = tmp_path / "999999.jpg"
    shutil.copy(data_dir / "train/BSD200/100075.jpg", copy)
    other = next(p for p in sorted((data_dir / "train/BSD200").iterdir())
                 if p.stem not in data.HELDOUT_IMAGES["BSD200"])
    load_pairs([other], 2, tmp_path / "cache")  # an ordinary training image: fine
    with pytest.raises(AmmsError, match="999999.jpg is a copy of a held-out validation image"):
        load_pairs([other, copy], 2, tmp_path / "cache")


def test_code_commit_is_dirty_only_for_code(tmp_path):
    # a results file or registry being written (a study running from the checkout) is not a
    # change of code: runs recorded meanwhile must not all be marked +dirty
    from amms_lib.runtime import code_commit

    repo = tmp_path / "repo"
    (repo / "amms_lib").mkdir(parents=True)
    (repo / "benchmarks" / "results").mkdir(parents=True)
    files = {"amms_lib/net.py": "x = 1\n", "benchmarks/results/r.json": "{}\n",
             "checkpoints.json": "{}\n", "notebooks.ipynb": "{}\n", "README.md": "a\n"}
    for name, text in files.items():
        (repo / name).write_text(text)
    git = ["git", "-C", str(repo), "-c", "user.name=x", "-c", "user.email=x@x"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "a"], check=True)
    clean = code_commit(repo)
    assert "+dirty" not in clean != "unknown"
    for name in ("benchmarks/results/r.json", "checkpoints.json", "README.md"):
        (repo / name).write_text("changed\n")
    assert code_commit(repo) == clean
    for name in ("amms_lib/net.py", "notebooks.ipynb"):
        (repo / name).write_text("changed\n")
        assert code_commit(repo) == clean + "+dirty"
        subprocess.run([*git, "checkout", "-q", "--", name], check=True)


def _register_run():
    import runpy

    return runpy.run_path(str(Path(__file__).parents[1] / "scripts" / "register_run.py"),
                          run_name="imported")


def test_register_run_records_the_start_the_run_recorded_when_it_started(use_data, tmp_path,
                                                                        capsys):
    """The --init-from file resumed further after a run started from it: registration had
    read that file as it was then (step 4), not as the run started from it (step 2)."""
    from amms_lib.runtime import file_sha256

    p = _cfg(tmp_path, iters_per_epoch=2, val_every=2, out_dir=str(tmp_path / "P"))
    train(p)
    start = tmp_path / "P" / "last.pt"
    sha = file_sha256(start)
    q = _cfg(tmp_path, iters_per_epoch=2, val_every=2, out_dir=str(tmp_path / "Q"),
             init_from=str(start))
    train(q)
    train(replace(p, resume=True, epochs=2))  # the starting point moves on to step 4
    assert read_checkpoint(start)["step"] == 4 and file_sha256(start) != sha
    register_run = _register_run()
    folder = tmp_path / "reg"
    assert register_run["main"]([q.out_dir, "--command", "Q", "--folder", str(folder),
                                 "--commit", "abc"]) == 0
    meta = json.loads((folder / "metadata.json").read_text())["amms_x2.pt"]
    assert meta["init_step"] == 2 and meta["init_sha256"] == sha
    init = json.loads((tmp_path / "Q" / "config.json").read_text())["init"]
    assert (init["path"], init["sha256"], init["step"]) == (str(start.resolve()), sha, 2)
    assert meta["init_minutes"] == init["minutes"] is not None
    # a run from before the record: the file now says nothing about its start
    best = tmp_path / "Q" / "best.pt"
    torch.save({k: v for k, v in read_checkpoint(best).items() if k != "init"}, best)
    capsys.readouterr()
    assert register_run["main"]([q.out_dir, "--command", "Q", "--folder",
                                 str(tmp_path / "reg2"), "--commit", "abc"]) == 2
    err = capsys.readouterr().err
    assert "started with are unknown" in err and err.count("\n") == 1
    assert not (tmp_path / "reg2").exists()


def test_ctrl_c_says_what_there_is_to_resume(use_data, tmp_path, capsys, monkeypatch):
    """Interrupted before its first checkpoint, an --overwrite run had said that last.pt
    holds the last checkpoint and --resume continues from it: there was no last.pt."""
    import amms_lib.train as tr

    out = tmp_path / "run"
    train(_cfg(tmp_path, iters_per_epoch=2, val_every=2))  # an earlier run in the folder
    argv = ["--train-sets", "T91", "--epochs", "1", "--iters-per-epoch", "2", "--batch-size",
            "2", "--patch-size", "16", "--workers", "0", "--model-kwargs", json.dumps(TINY),
            "--val-every", "1", "--val-images", "1", "--val-max-side", "24", "--device",
            "cpu", "--out-dir", str(out)]
    real, calls = tr.validate, []

    def ctrl_c_at(n):
        def validate(*a, **k):
            calls.append(1)
            if len(calls) == n:
                raise KeyboardInterrupt
            return real(*a, **k)
        return validate

    monkeypatch.setattr(tr, "validate", ctrl_c_at(1))  # at the first validation
    monkeypatch.setenv("TQDM_DISABLE", "1")
    capsys.readouterr()
    assert tr.main(argv + ["--overwrite"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert not (out / "last.pt").exists()
    assert "before its first checkpoint" in err[-1] and "--overwrite" in err[-1], err
    assert "holds the last checkpoint" not in err[-1]
    calls.clear()
    monkeypatch.setattr(tr, "validate", ctrl_c_at(2))  # after the first checkpoint
    assert tr.main(argv + ["--overwrite"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert f"{out / 'last.pt'} holds the last checkpoint" in err[-1] and "--resume" in err[-1]


def test_more_validation_images_than_the_set_holds_records_those_used(use_data, tmp_path,
                                                                        capsys):
    """--val-images 100 on the 15 held-out images validated on all 15 and recorded 100
    (config.json, checkpoints, then the registry)."""
    n = len(data.list_images(data.HELDOUT))
    assert n < 100
    cfg = _cfg(tmp_path, iters_per_epoch=2, val_every=2, val_images=100, val_max_side=12)
    train(cfg)
    assert f"holds only {n} images; validating on all {n}" in capsys.readouterr().err
    run = Path(cfg.out_dir)
    assert json.loads((run / "config.json").read_text())["val_images"] == n
    assert read_checkpoint(run / "best.pt")["config"]["val_images"] == n
    train(replace(cfg, resume=True, epochs=2))  # the same request resumes it
    assert read_checkpoint(run / "last.pt")["step"] == 4
    folder = tmp_path / "reg"
    assert _register_run()["main"]([cfg.out_dir, "--command", "x", "--folder", str(folder),
                                    "--commit", "abc"]) == 0
    assert json.loads((folder / "metadata.json").read_text())["amms_x2.pt"]["val_images"] == n


def test_register_run_refuses_a_run_still_training(use_data, tmp_path, capsys):
    """A run whose process still holds its folder had its best.pt so far registered."""
    from amms_lib.runtime import FolderLock

    cfg = _cfg(tmp_path, iters_per_epoch=2, val_every=2)
    train(cfg)
    register_run, folder = _register_run(), tmp_path / "reg"
    args = [cfg.out_dir, "--command", "x", "--folder", str(folder), "--commit", "abc"]
    capsys.readouterr()
    with FolderLock(Path(cfg.out_dir), "training"):  # the training's lock, in effect
        assert register_run["main"](args) == 2
    err = capsys.readouterr().err
    assert f"is still training (held by pid {os.getpid()})" in err and err.count("\n") == 1
    assert not folder.exists()
    assert register_run["main"](args) == 0  # finished: registered


def test_register_run_says_a_best_pt_of_another_run_is_not_from_its_curve(use_data, tmp_path,
                                                                          capsys):
    """A best.pt copied from another run had been refused as 'stopped between writes;
    finish it with --resume' (resuming would not help), with an unrounded score."""
    import re
    import shutil

    cfg = _cfg(tmp_path, iters_per_epoch=2, val_every=2)
    train(cfg)
    run, register_run = Path(cfg.out_dir), _register_run()
    own = (run / "best.pt").read_bytes()
    args = [str(run), "--command", "x", "--folder", str(tmp_path / "reg"), "--commit", "abc"]
    others = {"seed=1": _cfg(tmp_path, iters_per_epoch=2, val_every=2, seed=1,
                             out_dir=str(tmp_path / "seed1")),
              "is not in metrics.jsonl": _cfg(tmp_path, iters_per_epoch=2, val_every=2,
                                              init_from=str(run / "last.pt"),
                                              out_dir=str(tmp_path / "started"))}
    for says, other in others.items():
        train(other)
        shutil.copy(Path(other.out_dir) / "best.pt", run / "best.pt")
        capsys.readouterr()
        assert register_run["main"](args) == 2
        err = capsys.readouterr().err
        assert "is not from this run's curve" in err and says in err, err
        assert "between writes" not in err and err.count("\n") == 1
        assert not re.search(r"\d\.\d{3,} dB", err), err
        assert not (tmp_path / "reg").exists()
    (run / "best.pt").write_bytes(own)
    # best.pt written at step 4, last.pt not yet (and the log cut back to it by a resume):
    # stopped between writes, which --resume finishes
    cut = replace(cfg, out_dir=str(tmp_path / "cut"))
    train(cut)
    behind = (Path(cut.out_dir) / "last.pt").read_bytes()
    train(replace(cut, resume=True, epochs=2))
    cutdir = Path(cut.out_dir)
    shutil.copy(cutdir / "last.pt", cutdir / "best.pt")  # a validation of step 4 as best
    (cutdir / "last.pt").write_bytes(behind)
    from amms_lib.runlog import truncate_log

    truncate_log(cutdir / "metrics.jsonl", 2)
    assert register_run["main"]([str(cutdir), *args[1:]]) == 2
    err = capsys.readouterr().err
    assert "stopped between writes; finish it with --resume" in err, err
    assert not re.search(r"\d\.\d{3,} dB", err), err


@pytest.mark.parametrize("transpose", [0, 1, 2, 5])  # PIL: flip l-r, flip t-b, rot 90, transpose
def test_a_flipped_or_rotated_held_out_image_is_never_trained_on(use_data, tmp_path, transpose):
    """train/BSD200/zz_100075_flipped.png (100075.jpg flipped left-right) had been trained on
    ('191 training images') while validation on 100075 was still recorded as held-out:
    training augments with these very flips and rotations."""
    from PIL import Image

    flipped = tmp_path / "BSD200" / "zz_100075_flipped.png"
    flipped.parent.mkdir()
    Image.open(use_data / "train/BSD200/100075.jpg").transpose(transpose).save(flipped)
    other = use_data / "train/BSD200/100080.jpg"
    with pytest.raises(AmmsError, match=r"zz_100075_flipped\.png is a copy of a held-out "
                                        r"validation image \(100075, or a flip, rotation"):
        load_pairs([other, flipped], 2, tmp_path / "cache")


@pytest.mark.parametrize("edit", ["jpeg95", "jpeg50", "scale90", "scale50", "squash",
                                  "trim5", "trim10", "grey"])
def test_a_re_encoded_or_rescaled_held_out_image_is_never_trained_on(use_data, tmp_path,
                                                                     edit):
    """A JPEG re-save (q95), a 90% rescale, a 5% squash or a 5 px trim of held-out 100075
    had been trained on, and the run registered as 'BSD200 without heldout': other pixels,
    the same picture."""
    from PIL import Image

    img = Image.open(use_data / "train/BSD200/100075.jpg")
    if edit.startswith("scale"):
        f = int(edit[5:]) / 100
        img = img.resize((round(img.width * f), round(img.height * f)), Image.BICUBIC)
    elif edit == "squash":  # one direction only
        img = img.resize((img.width, round(img.height * 0.925)), Image.BICUBIC)
    elif edit.startswith("trim"):
        t = int(edit[4:])
        img = img.crop((t, t, img.width - t, img.height - t))
    elif edit == "grey":
        img = img.convert("L")
    copy = tmp_path / "BSD200" / "zz_copy.jpg"
    copy.parent.mkdir()
    img.save(copy, quality=int(edit[4:]) if edit.startswith("jpeg") else 90)
    other = use_data / "train/BSD200/100080.jpg"
    with pytest.raises(AmmsError, match=r"zz_copy\.jpg is a copy of a held-out validation "
                                        r"image \(100075, .*re-encoding, rescale"):
        load_pairs([other, copy], 2, tmp_path / "cache")


def test_no_standard_image_is_near_a_held_out_one(use_data):
    """The near-copy check's margin, measured: every other image of the training and
    benchmark sets stays far below ``data.NEAR`` (at most 0.77), so none is refused."""
    thumbs = data.heldout_thumbnails(use_data)
    held = {n for names in data.HELDOUT_IMAGES.values() for n in names}
    files = [f for f in sorted((use_data / "train").rglob("*.*"))
             if f.stem not in held] + sorted((use_data / "benchmark").rglob("HR/*.*"))
    assert len(files) > 450 and len(thumbs) == 8 * len(held)
    worst = 0.0
    for f in files:
        img = data.read_image(f)
        t = data.thumbnail(img)
        worst = max([worst] + [float(t @ h) for _, h in thumbs])
        assert data.near_heldout(img, thumbs) is None, f
    assert worst < 0.8 < data.NEAR - 0.1, worst


@pytest.mark.parametrize("image,edit", [("t6", "trim4"), ("t26", "mod12"), ("t26", "mod48"),
                                        ("t43", "mod48"), ("100075", "pad48"),
                                        ("100075", "frame"), ("t26", "flip_pad_jpeg")])
def test_a_trimmed_padded_or_framed_held_out_image_is_never_trained_on(use_data, tmp_path,
                                                                       image, edit):
    """T91's t6 trimmed by 4 px a side, t26 cropped to multiples of 12 (t26 and t43 to 48,
    a window chosen in the middle had been cut), 100075 reflect-padded to multiples of 48 or
    given a white frame had been trained on (their whole-image
    thumbnails move), the runs registered as 'without heldout'."""
    from PIL import Image

    img = data.read_image(data._heldout_file(image, use_data))
    if edit == "trim4":
        img = img[4:-4, 4:-4]
    elif edit.startswith("mod"):
        m = int(edit[3:])
        img = img[:img.shape[0] // m * m, :img.shape[1] // m * m]
    elif edit == "pad48":
        img = np.pad(img, ((0, -img.shape[0] % 48), (0, -img.shape[1] % 48), (0, 0)), "reflect")
    elif edit == "frame":
        img = np.pad(img, ((8, 8), (8, 8), (0, 0)), constant_values=255)
    else:  # flipped, edge-padded by odd amounts, JPEG q75
        img = np.pad(img[:, ::-1], ((5, 6), (9, 2), (0, 0)), "edge")
    copy = tmp_path / "Mine" / "mine.jpg"
    copy.parent.mkdir()
    Image.fromarray(np.ascontiguousarray(img)).save(copy, quality=75 if "jpeg" in edit else 98)
    other = use_data / "train/T91/t2.png"
    with pytest.raises(AmmsError, match=rf"mine\.jpg is a copy of a held-out validation image "
                                        rf"\({image}, .*trim or padding of it"):
        load_pairs([other, copy], 2, tmp_path / "cache")


def test_a_refused_training_image_leaves_no_run_behind(data_dir, tmp_path, monkeypatch):
    """A run refused for a held-out copy among its images had left config.json in its
    folder, so the same command, once the image was removed, was refused as 'an earlier
    run'; with --overwrite the refusal (or a truncated image) came after the earlier run
    had been deleted; a file name that is not UTF-8 (a Windows zip's 'Stra\\xdfe.png') had ended in
    a UnicodeEncodeError from the LR cache's key."""
    from PIL import Image

    root = tmp_path / "data"
    (root / "train").mkdir(parents=True)
    for sub in ("benchmark", "train/T91", "train/BSD200"):
        (root / sub).symlink_to(data_dir / sub)
    mine = root / "train" / "Mine"
    mine.mkdir()
    Image.open(data_dir / "train/T91/t2.png").save(
        os.fsdecode(bytes(mine) + b"/Stra\xdfe.png"))
    trimmed = data.read_image(data._heldout_file("t6", data_dir))[4:-4, 4:-4]
    Image.fromarray(np.ascontiguousarray(trimmed)).save(mine / "t6_trim4.png")
    monkeypatch.setenv("AMMS_DATA", str(root))
    cfg = _cfg(tmp_path, train_sets=("Mine",))
    with pytest.raises(AmmsError, match=r"t6_trim4\.png is a copy of a held-out"):
        train(cfg)
    assert not any((tmp_path / "run").glob("*")), list((tmp_path / "run").glob("*"))
    (mine / "t6_trim4.png").unlink()
    train(cfg)  # the same command, the copy removed: a new run, not "an earlier run"
    assert (tmp_path / "run" / "best.pt").is_file()
    # --overwrite had cleared the earlier run before the refusal (a copy, a truncated file)
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    Image.fromarray(np.ascontiguousarray(trimmed)).save(mine / "t6_trim4.png")
    with pytest.raises(AmmsError, match=r"t6_trim4\.png is a copy of a held-out"):
        train(replace(cfg, overwrite=True))
    (mine / "t6_trim4.png").write_bytes((mine / "t6_trim4.png").read_bytes()[:300])
    with pytest.raises(AmmsError, match=r"t6_trim4\.png"):
        train(replace(cfg, overwrite=True))
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()} == before


def test_a_cache_made_by_an_earlier_check_is_checked_again(use_data, tmp_path, monkeypatch):
    """A set cached while the check let a copy through (t26 cropped to multiples of 48,
    before the window moved) was trained on after the fix: a cache hit skips the check,
    and the key did not cover the check's code."""
    from PIL import Image

    from amms_lib import copies, patches

    img = data.read_image(data._heldout_file("t26", use_data))
    copy = tmp_path / "Mine" / "t26_mod48.png"
    copy.parent.mkdir()
    Image.fromarray(np.ascontiguousarray(img[:96, :144])).save(copy)
    files, cache = [use_data / "train/T91/t2.png", copy], tmp_path / "cache"
    with monkeypatch.context() as m:  # the earlier check: blind to this copy
        m.setattr(copies, "contains", lambda img, found: None)
        m.setattr(patches, "_check_id", lambda: "earlier")
        assert len(load_pairs(files, 2, cache)[0]) == 2
    with pytest.raises(AmmsError, match=r"t26_mod48\.png is a copy of a held-out"):
        load_pairs(files, 2, cache)


def test_no_standard_image_holds_a_held_out_window(use_data):
    """The window check's margin, measured on T91, Set5, Set14 and a quarter of BSD200 (all
    495 standard images reach at most 0.61): far below ``copies.SAME``, where copies score
    0.92 or more."""
    from amms_lib import copies

    windows = data.heldout_windows(use_data)
    held = {n for names in data.HELDOUT_IMAGES.values() for n in names}
    files = [f for f in sorted((use_data / "train/T91").glob("*.*"))
             + sorted((use_data / "train/BSD200").glob("*.*"))[::4]
             + sorted((use_data / "benchmark").glob("Set*/HR/*.*")) if f.stem not in held]
    assert len(files) > 140 and sum(len(w) for _, w in windows) == 8 * len(held)
    worst = max(copies.match(data.read_image(f), windows)[0] for f in files)
    assert worst < 0.7 < copies.SAME - 0.05, worst


def test_training_files_with_the_same_pixels_count_once(use_data, tmp_path, capsys):
    """PNG copies of BSD200's JPEGs had been trained on as more images ('228 training
    images', 190 distinct) without a word; T91's own twins (t36, t65) stay, as shipped."""
    from PIL import Image

    folder = tmp_path / "BSD200"
    folder.mkdir()
    jpegs = [use_data / f"train/BSD200/{n}.jpg" for n in ("100080", "100098", "103041")]
    for jpeg in jpegs[:2]:
        Image.open(jpeg).save(folder / f"{jpeg.stem}.png")  # lossless: the same pixels
    files = [*jpegs, *sorted(folder.iterdir())]
    capsys.readouterr()
    hrs, _, _ = load_pairs(files, 2, tmp_path / "cache")
    assert len(hrs) == 3
    note = ("note: two training files for 2 image(s): 100080.png, 100098.png (the same pixels "
            "as another file): the 2 duplicate(s) dropped, each image trained on once; keep "
            "one of each\n")
    assert capsys.readouterr().err == note
    assert len(load_pairs(files, 2, tmp_path / "cache")[0]) == 3  # from the cache: said again
    assert capsys.readouterr().err == note
    twins = [use_data / "train/T91/t36.png", use_data / "train/T91/t65.png"]
    assert np.array_equal(read_image(twins[0]), read_image(twins[1]))
    assert len(load_pairs(twins, 2, tmp_path / "cache")[0]) == 2
    assert capsys.readouterr().err == ""


def test_a_resume_in_another_precision_is_refused(use_data, tmp_path):
    """A run trained with bf16 autocast and resumed in float32 (or back) was accepted, and
    its record and registration said one precision for weights trained in two."""
    cfg = _cfg(tmp_path, iters_per_epoch=4, val_every=2, train_sets=("skimage",))
    train(replace(cfg, iters_per_epoch=2))
    last = Path(cfg.out_dir) / "last.pt"
    ckpt = torch.load(last, weights_only=False)
    assert ckpt["precision"] == "float32"  # cpu_amp off: float32 on every CPU
    ckpt["precision"] = "bfloat16 autocast"  # as a --cpu-amp run on a bf16 CPU records
    torch.save(ckpt, last)
    before = last.read_bytes()
    with pytest.raises(AmmsError, match="computed in bfloat16 autocast, this one would in "
                                        "float32"):
        train(replace(cfg, resume=True))
    assert last.read_bytes() == before


def test_training_sets_named_twice_or_broken_links_are_one_line(tmp_path):
    """`--train-sets T91 T91` had trained on every T91 image twice ("172 training images");
    a broken link train/T91 was "not found ... available: ['BSD200', 'T91']"."""
    from amms_lib.patches import train_files

    (tmp_path / "train" / "BSD200").mkdir(parents=True)
    write_image(tmp_path / "train" / "BSD200" / "a.png", np.zeros((40, 40, 3), np.uint8))
    (tmp_path / "train" / "T91").symlink_to(tmp_path / "gone")
    with pytest.raises(AmmsError, match="BSD200 named twice .*name each set once"):
        train_files(("BSD200", "T91", "BSD200"), tmp_path)
    with pytest.raises(AmmsError, match=r"'T91': .*T91 is a broken link \(its target .*gone"):
        train_files(("BSD200", "T91"), tmp_path)
    with pytest.raises(AmmsError, match=r"'Set5' not found .*available: \['BSD200'\]$"):
        train_files(("Set5",), tmp_path)
    assert [p.name for p in train_files(("BSD200",), tmp_path)] == ["a.png"]


def test_a_training_set_named_by_a_path_is_refused(use_data):
    """`--train-sets BSD200/` (a shell's completion), `./BSD200` or an absolute path had
    opened BSD200 without leaving out its held-out images: the validation image trained on."""
    from amms_lib.patches import train_files

    for name in ("BSD200/", "./BSD200", str(use_data / "train" / "BSD200"), "", "."):
        with pytest.raises(AmmsError, match="by its name alone"):
            train_files(("T91", name))
    with pytest.raises(AmmsError, match="T91 named twice"):
        train_files(("T91", "BSD200", "T91"))


def test_a_cache_made_before_the_held_out_images_arrived_is_checked_again(data_dir, tmp_path,
                                                                         monkeypatch):
    """A training set cached while BSD200 was not in the data folder had been reused after
    it arrived, with a JPEG copy of held-out 100075 among its images (the check runs only
    when the cache is built: now the held-out pixels are part of its key)."""
    from PIL import Image

    root = tmp_path / "data"
    (root / "train" / "Mine").mkdir(parents=True)
    (root / "benchmark").symlink_to(data_dir / "benchmark")
    src = data_dir / "train" / "BSD200"
    Image.open(src / "100075.jpg").save(root / "train" / "Mine" / "zz.jpg", quality=95)
    Image.open(src / "100080.jpg").save(root / "train" / "Mine" / "a.png")
    monkeypatch.setenv("AMMS_DATA", str(root))
    files = sorted((root / "train" / "Mine").iterdir())
    load_pairs(files, 2, tmp_path / "cache")  # no held-out image to compare with yet
    (root / "train" / "BSD200").symlink_to(src)  # the user adds BSD200
    with pytest.raises(AmmsError, match=r"zz\.jpg is a copy of a held-out validation image"):
        load_pairs(files, 2, tmp_path / "cache")


def test_the_builtin_images_train_alone(use_data):
    """`--train-sets T91 skimage` had said "training set 'skimage' not found at
    .../train/skimage", though skimage is a valid name when named alone."""
    with pytest.raises(AmmsError, match=r"training set 'skimage': the built-in skimage images "
                                        r"are a demo set that trains alone"):
        train_files(["T91", "skimage"])
