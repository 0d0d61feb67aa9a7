"""Time known before the work: the FLOP model, the estimate, its cache, the progress bar,
and the upscaler's --max-seconds and --tile auto. (How close the estimate comes to
measured times is benchmarks/upscale_time.py's job: timing is not a unit test.)"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_upscale import KW, cli, rand_img, save, tiny_net

from amms_lib import speed
from amms_lib.checkpoint import save_checkpoint
from amms_lib.errors import AmmsError
from amms_lib.inference import OVERLAP, TILES, plan, spans, upscale
from amms_lib.profile import flops_by_operator

RATES = speed.Rates(conv=1e9, att=2e9, call=0.01, shape=0.05)  # a made-up machine


@pytest.fixture(scope="module")
def net():
    return tiny_net()


@pytest.fixture
def known_rates(monkeypatch):
    """Every network runs at RATES: no timing, no cache file."""
    monkeypatch.setattr(speed, "calibrate", lambda net, refresh=False: RATES)
    return RATES


@pytest.mark.parametrize("hw", [(40, 56), (7, 90), (64, 64)])
def test_flop_model_matches_the_counter(net, hw):
    model, counts = speed.flop_model(net), flops_by_operator(net, hw)
    n = hw[0] * hw[1]
    assert model.attention(n) == counts["non-local attention"]  # exactly quadratic
    conv = counts["total"] - counts["non-local attention"]
    assert model.conv(n) == pytest.approx(conv, rel=1e-3)


def test_estimate_is_the_sum_over_tiles_and_eight_for_the_ensemble(net, known_rates):
    flops = speed.flop_model(net)
    whole = speed.estimate_seconds(net, 100, 70)
    assert whole == pytest.approx(RATES.shape + RATES.call + flops.conv(7000) / RATES.conv
                                  + flops.attention(7000) / RATES.att)
    cells = [(i1 - i0, j1 - j0) for *_, i0, i1 in spans(100, 32, OVERLAP)
             for *_, j0, j1 in spans(70, 32, OVERLAP)]
    tiled = speed.estimate_seconds(net, 100, 70, tile=32)
    warm = sum(RATES.seconds(flops, r * c) for r, c in cells)
    assert tiled == pytest.approx(warm + RATES.shape * len(set(cells)))  # set-up once a shape
    both = set(cells) | {(c, r) for r, c in cells}  # the ensemble's rotations transpose them
    assert speed.estimate_seconds(net, 100, 70, 32, ensemble=True) == pytest.approx(
        8 * warm + RATES.shape * len(both))


class Bar:
    """Records what the progress bar is told."""

    def __init__(self, total):
        self.total, self.n, self.updates, self.closed = total, 0.0, [], False

    def update(self, k):
        self.updates.append(k)
        self.n += k

    def close(self):
        self.closed = True


@pytest.mark.parametrize("tile, ensemble", [(None, False), (24, False), (None, True)])
def test_progress_bar_fills_to_the_estimate(net, known_rates, tile, ensemble):
    """One update per non-local block and per network call (tile, ensemble member),
    adding up to the estimate; hooks removed afterwards."""
    img = rand_img(50, 60)
    est = speed.estimate_seconds(net, 50, 60, tile, OVERLAP, ensemble)
    bar = Bar(est)
    with speed.progress(net, est, bar=bar):
        from amms_lib.inference import forward_tiled, self_ensemble, to_tensor
        x = to_tensor(img)
        fn = net if tile is None else (lambda t: forward_tiled(net, t, tile, OVERLAP))
        self_ensemble(fn, x) if ensemble else fn(x)
    calls = (8 if ensemble else 1) * (1 if tile is None else len(spans(50, tile, OVERLAP))
                                      * len(spans(60, tile, OVERLAP)))
    blocks = sum(isinstance(m, speed.NonLocalBlock) for m in net.modules())
    assert len(bar.updates) == calls * (blocks + 1)
    assert bar.n == pytest.approx(est) and bar.closed
    assert not any(m._forward_hooks for m in net.modules())


def test_progress_bar_never_passes_its_total(net, known_rates):
    bar = Bar(0.5 * speed.estimate_seconds(net, 40, 40))  # an estimate that was too low
    with speed.progress(net, bar.total, bar=bar):
        net(torch.rand(1, 3, 40, 40))
    assert bar.n == pytest.approx(bar.total) and min(bar.updates) >= 0


def test_plan_refuses_over_the_time_budget_and_names_a_tile_that_fits(net, known_rates):
    whole = speed.estimate_seconds(net, 300, 300)
    with pytest.raises(AmmsError, match=r"about \d+ s untiled, over the .* use --tile (\d+)"):
        plan(net, 300, 300, max_seconds=whole / 2)
    try:
        plan(net, 300, 300, max_seconds=whole / 2)
    except AmmsError as exc:
        suggested = int(str(exc).split("--tile ")[1].split()[0])
    assert speed.estimate_seconds(net, 300, 300, suggested) <= whole / 2
    assert plan(net, 300, 300, max_seconds=whole * 2) == (None, pytest.approx(whole))


def test_auto_tile_is_the_fastest_setting_that_fits_both_budgets(net, known_rates):
    options = [None, *(t for t in TILES if t < 300)]
    est = {t: speed.estimate_seconds(net, 300, 300, t) for t in options}
    tile, seconds = plan(net, 300, 300, "auto", max_seconds=1e9)
    assert tile == min(est, key=est.get) and seconds == pytest.approx(min(est.values()))
    limit = sorted(est.values())[1] * 1.001  # the fastest two fit: the fastest is chosen
    assert plan(net, 300, 300, "auto", max_seconds=limit)[0] == min(est, key=est.get)
    assert plan(net, 300, 300, "auto")[0] is None  # untimed: the whole image if it fits
    with pytest.raises(AmmsError, match="fits no tile"):
        plan(net, 300, 300, "auto", max_seconds=1e-9)
    # the memory budget counts too: the whole image would fit the time, not the memory
    from amms_lib.inference import estimate_memory
    budget = estimate_memory(net, 300, 300, 128)
    assert estimate_memory(net, 300, 300) > budget
    fit = [t for t in options if estimate_memory(net, 300, 300, t) <= budget]
    chosen = plan(net, 300, 300, "auto", max_bytes=budget, max_seconds=1e9)[0]
    assert chosen is not None and chosen == min(fit, key=est.get)


def test_calibration_is_cached_per_network_and_a_damaged_cache_is_remeasured(
        net, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(speed, "_RATES", {})
    calls = []
    monkeypatch.setattr(speed, "_fastest", lambda fn, device, **kw: calls.append(1) or 0.01)
    first = speed.calibrate(net)
    n = len(calls)
    assert n == 2 + 2 * len(speed.PROBE_SIDES)  # attention and 4x4 probes; per size cold, warm
    speed._RATES.clear()
    assert speed.calibrate(net) == first and len(calls) == n  # read from the file
    (tmp_path / "amms_lib" / "speed.json").write_text("{not json")
    speed._RATES.clear()
    speed.calibrate(net)
    assert len(calls) == 2 * n
    assert speed.signature(net, torch.device("cpu")) in json.loads(
        (tmp_path / "amms_lib" / "speed.json").read_text())
    other = tiny_net()
    other.df[0].ls_am.ams[0].nl.mode = "naive"  # another attention kernel: its own entry
    assert speed.signature(other, torch.device("cpu")) != speed.signature(
        net, torch.device("cpu"))


def test_calibrating_a_slow_network_stops_at_its_second_slow_size(net, tmp_path, monkeypatch):
    """A network slow at the small sizes (MemNet at x4 runs at HR resolution) is probed at
    two sizes, each timed once after its first call: seconds, not minutes, of calibration."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(speed, "_RATES", {})
    calls = []
    monkeypatch.setattr(speed, "_fastest",
                        lambda fn, device, repeats=1, **kw: calls.append(repeats) or 2.0)
    speed.calibrate(net)
    assert calls[2:] == [1, 1, 1, 1]  # after the attention and 4x4 probes: 2 sizes, once each
    entry = json.loads((tmp_path / "amms_lib" / "speed.json").read_text())
    assert next(iter(entry.values()))["sides"] == list(speed.PROBE_SIDES[:2])


def test_fit_recovers_the_rates_of_a_made_up_machine(net):
    flops = speed.flop_model(net)
    seconds = [RATES.seconds(flops, s * s) for s in speed.PROBE_SIDES]
    fit = speed.fit_rates(flops, speed.PROBE_SIDES, seconds, RATES.att, RATES.call)
    assert fit.conv == pytest.approx(RATES.conv) and fit.call == pytest.approx(RATES.call)


def test_calibration_measures_the_first_call_at_a_new_shape(net, tmp_path, monkeypatch):
    """First call at a size: warm time + set-up; the set-up is the median excess."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(speed, "_RATES", {})
    times = iter([0.01, 0.002] + [t for s in speed.PROBE_SIDES
                                  for t in (0.3 + s / 1e3, s / 1e3)])
    monkeypatch.setattr(speed, "_fastest", lambda fn, device, **kw: next(times))
    assert speed.calibrate(net).shape == pytest.approx(0.3)


# --- the command line ----------------------------------------------------------------


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, net):
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny_x2.pt", net,
                           name="amms", scale=2, model_kwargs=KW)


def test_cli_refuses_an_image_over_max_seconds_with_a_tile_and_goes_on(
        tmp_path, capsys, ckpt, known_rates, net):
    big, small = save(tmp_path / "big.png", rand_img(200, 200)), \
        save(tmp_path / "small.png", rand_img(20, 20))
    limit = speed.estimate_seconds(net, 200, 200) / 2
    rc, err = cli(capsys, big, small, "--scale", 2, "--checkpoint", ckpt, "--tile", "whole",
                  "--max-seconds", limit, "-o", tmp_path / "out")
    assert rc == 1
    assert f"failed: {big}: 200x200 input would take about" in err and "--tile " in err
    assert (tmp_path / "out" / "small_x2.png").is_file()
    assert not (tmp_path / "out" / "big_x2.png").exists()


def test_cli_tile_auto_says_what_it_chose(tmp_path, capsys, ckpt, known_rates, net):
    src = save(tmp_path / "big.png", rand_img(200, 200))
    limit = speed.estimate_seconds(net, 200, 200, 64) * 1.01
    assert speed.estimate_seconds(net, 200, 200) > limit
    rc, err = cli(capsys, src, "--scale", 2, "--checkpoint", ckpt, "--tile", "auto",
                  "--max-seconds", limit, "-o", tmp_path / "out")
    tile = plan(net, 200, 200, "auto", max_seconds=limit)[0]
    assert rc == 0 and f"tiled automatically: --tile {tile}" in err
    out = np.asarray(__import__("PIL.Image").Image.open(tmp_path / "out" / "big_x2.png"))
    expected = upscale(net, rand_img(200, 200), tile=tile)
    np.testing.assert_array_equal(out, expected)


def test_cli_prints_a_long_estimate_before_the_work(tmp_path, capsys, ckpt, monkeypatch,
                                                    net):
    slow = speed.Rates(conv=1e6, att=1e6, call=0.0)  # a machine where it takes a while
    monkeypatch.setattr(speed, "calibrate", lambda net, refresh=False: slow)
    src = save(tmp_path / "a.png", rand_img(30, 30))
    est = speed.estimate_seconds(net, 30, 30, rates=slow)
    assert est > speed.SHOW_ABOVE
    rc, err = cli(capsys, src, "--scale", 2, "--checkpoint", ckpt, "--max-seconds", 1e9,
                  "-o", tmp_path / "out")
    assert rc == 0 and f"a.png: 30x30 -> 60x60, about {est:.0f} s (whole image)" in err


def test_a_refusal_on_cached_rates_measures_again_first(tmp_path, capsys, ckpt, net,
                                                       monkeypatch):
    """A cache timed on a busy machine makes every estimate slow; before refusing, the
    network is timed again once (and not again in the same process)."""
    busy, quiet = speed.Rates(conv=1e3, att=1e3, call=0.0), speed.Rates(1e12, 1e12, 0.0)
    calls = []

    def calibrate(net, refresh=False):
        calls.append(refresh)
        if refresh:
            speed._MEASURED.add(speed.signature(net, torch.device("cpu")))
        return quiet if speed._MEASURED else busy
    monkeypatch.setattr(speed, "calibrate", calibrate)
    monkeypatch.setattr(speed, "_MEASURED", set())
    src = save(tmp_path / "a.png", rand_img(30, 30))
    rc, err = cli(capsys, src, "--scale", 2, "--checkpoint", ckpt, "--max-seconds", 60,
                  "-o", tmp_path / "out")
    assert rc == 0, err
    assert True in calls  # measured again
    monkeypatch.setattr(speed, "calibrate", lambda net, refresh=False: busy)  # really slow
    rc, err = cli(capsys, src, "--scale", 2, "--checkpoint", ckpt, "--max-seconds", 60,
                  "--overwrite", "-o", tmp_path / "out")
    assert rc == 1 and "raise --max-seconds" in err  # timed already: refused, not re-timed


@pytest.mark.parametrize("argv, says", [
    (["--tile", "big"], "expected auto, whole or a number"),
    (["--tile", "0"], "--tile must be auto, whole or at least 16"),
    (["--tile", "1"], "--tile must be auto, whole or at least 16"),
    (["--max-seconds", "0"], "--max-seconds must be a positive number"),
    (["--max-seconds", "nan"], "--max-seconds must be a positive number"),
])
def test_bad_time_options_are_one_line(tmp_path, capsys, ckpt, argv, says):
    src = save(tmp_path / "a.png", rand_img(10, 10))
    with pytest.raises(SystemExit) as exc:
        cli(capsys, src, "--scale", 2, "--checkpoint", ckpt, *argv, "-o", tmp_path / "o")
    assert exc.value.code == 2 and says in capsys.readouterr().err


@pytest.mark.parametrize("entry", [
    {"conv": 0, "att": 1e9, "call": 0.01, "shape": 0.0},
    {"conv": "nan", "att": 1e9, "call": 0.01, "shape": 0.0},
    {"conv": -1e9, "att": 1e9, "call": 0.01, "shape": 0.0},
    {"conv": True, "att": 1e9, "call": 0.01, "shape": 0.0},
    {"conv": 1e9, "att": 0, "call": 0.01, "shape": 0.0},
    {"conv": 1e9, "att": 1e9, "call": 1e308, "shape": 0.0},
    {"conv": 1e9, "att": 1e9, "call": 0.01},
    {"conv": 1e300, "att": 1e9, "call": 0.01, "shape": 0.0},  # would turn the budget off
    {"conv": 1e9, "att": 1e300, "call": 0.01, "shape": 0.0},
])
def test_a_cache_entry_that_is_not_a_rate_is_measured_again(net, tmp_path, monkeypatch,
                                                             entry):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(speed, "_RATES", {})
    path = tmp_path / "amms_lib" / "speed.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({speed.signature(net, torch.device("cpu")): entry}))
    calls = []
    monkeypatch.setattr(speed, "_fastest", lambda fn, device, **kw: calls.append(1) or 0.01)
    rates = speed.calibrate(net)
    assert calls and rates.conv > 0 and np.isfinite(rates.conv) and rates.call < 1


def test_an_unwritable_cache_is_one_warning(net, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file"))
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setattr(speed, "_RATES", {})
    monkeypatch.setattr(speed, "_fastest", lambda fn, device, **kw: 0.01)
    assert speed.calibrate(net).conv > 0
    err = capsys.readouterr().err
    assert err.count("warning: cannot write the speed cache") == 1


def test_tiny_tiles_pay_the_per_call_overhead(net, known_rates):
    """A 1-pixel tile means one network call per pixel: the estimate must say so."""
    per_pixel = speed.estimate_seconds(net, 20, 20, tile=1, overlap=0)
    assert per_pixel >= 400 * RATES.call


def test_the_hints_name_what_fits_both_budgets(net, known_rates):
    from amms_lib.inference import estimate_memory

    whole = speed.estimate_seconds(net, 200, 200)
    with pytest.raises(AmmsError, match="use --tile whole"):  # --tile 1 is the slow one
        plan(net, 200, 200, 1, overlap=0, max_seconds=whole * 1.5)
    tight = estimate_memory(net, 200, 200, 48) * 1.01  # only small tiles fit the memory ...
    with pytest.raises(AmmsError, match="no --tile fits: raise --max-seconds$"):
        plan(net, 200, 200, None, max_bytes=tight, max_seconds=1e-6)  # ... and none the time
    with pytest.raises(AmmsError, match="no --tile fits: free memory or raise --max-memory, "
                                        "raise --max-seconds"):  # both short
        plan(net, 200, 200, None, max_bytes=1e3, max_seconds=1e-6)
    with pytest.raises(AmmsError) as exc:  # only time short: memory is not blamed, no "0 s"
        plan(net, 200, 200, "auto", max_bytes=1e12, max_seconds=1e-6)
    assert "memory" not in str(exc.value) and " 0 s" not in str(exc.value)
    assert str(exc.value).endswith(": raise --max-seconds")
    need = estimate_memory(net, 200, 200)
    assert need < 2e9  # so half of it is a budget under a gigabyte
    with pytest.raises(AmmsError, match=r"over the [\d.]+ MB memory budget"):  # not "0.0 GB"
        plan(net, 200, 200, None, max_bytes=need / 2)
    with pytest.raises(AmmsError, match="drop --ensemble"):
        plan(net, 200, 200, "auto", ensemble=True, max_seconds=1e-6)


def test_peak_flops_per_cycle_by_cpu(monkeypatch):
    """The peak's FLOPs per cycle follow the FMA units, not only the flags: Zen 4 (AMD
    family 25) has AVX-512 on two 256-bit FMA units, 32 FLOP/cycle like AVX2; a Xeon or
    Zen 5 with two 512-bit units 64 (a wrong 64 on Zen 4 had halved every fraction)."""
    from amms_lib.machine import flops_per_cycle

    amd = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: {}\nmodel\t\t: 17\n"
    intel = "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 143\n"
    flags = {"avx512": {"avx512_f": True, "fma3": True}, "avx2": {"fma3": True}, "none": {}}
    expect = [("avx512", amd.format(25), 32), ("avx512", amd.format(26), 64),
              ("avx512", intel, 64), ("avx2", amd.format(25), 32), ("avx2", intel, 32),
              ("none", intel, 8), ("avx512", "", 64)]
    for caps, cpuinfo, fpc in expect:
        monkeypatch.setattr(torch.cpu, "get_capabilities", lambda c=caps: flags[c])
        assert flops_per_cycle(cpuinfo) == fpc, (caps, cpuinfo)


def test_the_peak_uses_the_max_clock_and_a_share_over_it_is_explained(tmp_path, monkeypatch):
    """The peak took BogoMIPS / 2 (the base clock) as the clock, so a kernel on a boosting
    core printed '103% of peak'. Where Linux exposes the max clock the peak uses it; else the
    base clock, labelled as a lower bound; a share above 100% never prints without a note."""
    from amms_lib import machine

    cpuinfo = "processor\t: 0\ncpu MHz\t\t: 2596.150\nbogomips\t: 5192.30\n"
    max_freq = tmp_path / "cpuinfo_max_freq"
    max_freq.write_text("3700000\n")  # kHz
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    peak, how = machine.peak_gflops(32, cpuinfo=cpuinfo, max_freq=max_freq)
    assert peak == pytest.approx(2 * 3.7 * 32) and "3.70 GHz" in how and "estimate" in how
    peak, how = machine.peak_gflops(32, cpuinfo=cpuinfo, max_freq=tmp_path / "none")
    assert peak == pytest.approx(2 * 2.59615 * 32) and "2.60 GHz" in how
    assert "estimate" in how and "boost" in how
    assert machine.peak_gflops(32, cpuinfo="processor\t: 0\n", max_freq=tmp_path / "none")[
        1].startswith("clock unknown")
    assert machine.of_peak(50, 100) == "50% of peak"
    over = machine.of_peak(103, 100)
    assert over.startswith("103% of peak") and "clock" in over
