"""What this machine can compute: an estimate of its fp32 peak (cores x clock x FLOPs per
cycle, read from cpufreq or /proc/cpuinfo and the CPU's flags) and the rate a large matrix
product reaches, the ceilings the speed benchmarks (``upscale_time``, ``attention_rate``) set
their measurements against."""
from __future__ import annotations

import time
from pathlib import Path

import torch


def flops_per_cycle(cpuinfo: str | None = None) -> int:
    """fp32 FLOPs per cycle per core: 2 FMAs x lanes x 2 (16 lanes with AVX-512 on two
    512-bit units, 8 with AVX2 or on Zen 4's 256-bit units); ``cpuinfo``: /proc/cpuinfo."""
    caps = torch.cpu.get_capabilities()
    if caps.get("avx512_f"):
        return 32 if amd_family(cpuinfo) == 25 else 64  # family 25 (0x19): Zen 3/4
    return 32 if caps.get("fma3") else 8


def cpuinfo_fields(cpuinfo: str | None = None) -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (or of ``cpuinfo``), keys lower-case;
    {} where it cannot be read. One reader for the CPU family and the clock."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return {}
    first = cpuinfo.split("\n\n")[0]  # processors are separated by blank lines
    pairs = (line.split(":", 1) for line in first.splitlines() if ":" in line)
    return {k.strip().lower(): v.strip() for k, v in pairs}


def amd_family(cpuinfo: str | None = None) -> int | None:
    """The CPU family of an AMD CPU from /proc/cpuinfo (25: Zen 3/4, 26: Zen 5), else None."""
    fields = cpuinfo_fields(cpuinfo)
    if fields.get("vendor_id") != "AuthenticAMD" or not fields.get("cpu family", "").isdigit():
        return None
    return int(fields["cpu family"])


MAX_FREQ = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")  # kHz, where exposed
# why a measured rate can pass the estimated peak
OVER_PEAK = "over the estimate: the cores ran faster than its clock (boost) or FLOPs per cycle"


def clock_ghz(cpuinfo: str | None = None, max_freq: Path = MAX_FREQ) -> tuple[float, str]:
    """The fastest clock the cores are known to reach, and where it was read: the max clock
    Linux exposes (cpufreq), else the larger of /proc/cpuinfo's ``cpu MHz`` and BogoMIPS / 2
    (the TSC's, usually the base clock: boost, where the machine hides it, runs faster);
    nan where neither is there."""
    try:
        return int(max_freq.read_text()) / 1e6, "max clock"
    except (OSError, ValueError):
        pass
    fields = cpuinfo_fields(cpuinfo)
    known = {}
    for key, per_ghz in (("cpu mhz", 1000), ("bogomips", 2000)):
        try:
            known[key] = float(fields[key]) / per_ghz
        except (KeyError, ValueError):
            pass
    if not known:
        return float("nan"), ""
    key = max(known, key=known.get)
    return known[key], ("cpu MHz" if key == "cpu mhz" else "BogoMIPS / 2") + (
        ", base clock: boost may be faster")


def peak_gflops(flops_per_cycle: int, cpuinfo: str | None = None,
                max_freq: Path = MAX_FREQ) -> tuple[float, str]:
    """An estimate of the fp32 peak of the cores torch uses, threads x clock (``clock_ghz``)
    x FLOPs per cycle, and how it was made."""
    ghz, source = clock_ghz(cpuinfo, max_freq)
    if ghz != ghz:  # nan
        return float("nan"), "clock unknown (no cpufreq, cpu MHz or BogoMIPS)"
    cores = torch.get_num_threads()
    return cores * ghz * flops_per_cycle, (f"estimate: {cores} cores x {ghz:.2f} GHz ({source})"
                                           f" x {flops_per_cycle} FLOP/cycle")


def of_peak(gflops: float, peak: float) -> str:
    """``gflops`` as a share of the estimated ``peak``, e.g. "52% of peak"; a share above
    100% says why (``OVER_PEAK``), never a bare impossible number."""
    share = f"{gflops / peak:.0%} of peak"
    return f"{share} ({OVER_PEAK})" if gflops > peak else share


def gemm_gflops(n: int = 2048) -> float:
    """Achieved GFLOP/s of one n x n fp32 matrix product (fastest of 3)."""
    a, b = torch.rand(n, n), torch.rand(n, n)
    torch.mm(a, b)
    best = min(timed(lambda: torch.mm(a, b)) for _ in range(3))
    return 2 * n**3 / best / 1e9


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t
