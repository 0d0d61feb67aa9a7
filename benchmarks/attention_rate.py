"""What limits the attention kernel on this CPU: its rate against the width d of q and k.

    python benchmarks/attention_rate.py [--sides 64 128] [--dims 8 16 32 64 128]
        [--json benchmarks/results/attention_rate.json]

The non-local block's attention, ``softmax(q k^T) v`` over N = side^2 positions, is
4 N^2 d FLOPs (q k^T and weights @ v, d = dv) plus N^2 exponentials. For each side and d
it times ``non_local.fused_attention`` (torch's flash kernel; fastest of 3) and prints
GFLOP/s, the fraction of the fp32 peak (``amms_lib.machine.peak_gflops``) and the ratio to a
2048^2 matrix product timed in the same process (the rate a real kernel reaches here).
Per score the kernel does 4 d FLOPs of products but one exponential, max and sum whatever
d is, so a small d leaves it further from peak. The compact AMMS has d = 16 (32 channels,
``nl_reduction`` 2): if the rate climbs with d, the width, not the kernel, is the limit.
"""
from __future__ import annotations

import torch

from amms_lib.machine import flops_per_cycle, gemm_gflops, of_peak, peak_gflops, timed
from amms_lib.non_local import fused_attention
from amms_lib.runtime import ArgumentParser, cli, cpu_name
from amms_lib.studies import check_new_results, measurement_kind, stamp

KIND = measurement_kind("attention_rate", {"cpu", "peak_gflops", "peak_how", "gemm_gflops",
                                           "threads", "rows"}, {"side", "d", "gflops"})


def best(fn, repeats: int = 5) -> float:
    fn()  # warm-up
    return min(timed(fn) for _ in range(repeats))


def main() -> None:
    ap = ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sides", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--dims", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--overwrite", action="store_true",
                    help="let --json replace an existing file")
    args = ap.parse_args()
    out = check_new_results(args.json, args.overwrite, KIND)
    peak, how = peak_gflops(flops_per_cycle())
    gemm = gemm_gflops()
    print(f"fp32 peak {peak:.0f} GFLOP/s ({how}); 2048^2 matrix product {gemm:.0f} GFLOP/s "
          f"({of_peak(gemm, peak)}); {torch.get_num_threads()} threads")
    rows = []
    for side in args.sides:
        n = side * side
        for d in args.dims:
            q, k, v = (torch.rand(1, n, d) for _ in range(3))
            att_s = best(lambda: fused_attention(q, k, v))
            rate = 4 * n * n * d / att_s / 1e9
            row = {"side": side, "d": d, "seconds": att_s, "gflops": rate,
                   "of_peak": rate / peak, "of_gemm": rate / gemm}
            rows.append(row)
            print(f"N = {side}^2, d = {d:3d}: {att_s * 1e3:8.1f} ms, {rate:6.1f} GFLOP/s = "
                  f"{of_peak(rate, peak)}, {rate / gemm:4.0%} of the 2048^2 product",
                  flush=True)
    if out:
        out.write(stamp({"cpu": cpu_name(), "peak_gflops": peak, "peak_how": how,
                         "gemm_gflops": gemm, "threads": torch.get_num_threads(),
                         "rows": rows}))
        print(out.said())


if __name__ == "__main__":
    raise SystemExit(cli(main))  # Ctrl-C, an AmmsError: one line
