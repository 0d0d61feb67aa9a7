"""Training speed: iterations/s, patches/s and peak memory of one training config.

    python benchmarks/train_speed.py [--scale 2] [--batch-size 16] [--lr-patch 48]
        [--channels 64 --n-amms 4 --n-am 2] [--steps 20] [--device auto]
        [--nl-modes full naive] [--variants eager ...] [--amp/--no-amp] [--compile]

Measures forward + backward + Adam steps on random patches (data loading excluded: the
training loader serves cached LR crops, see amms_lib.patches) for each non-local mode and
each variant, and prints the ratio against the first row. Variants combine ``cl``
(channels-last), ``bf16`` (autocast, also on the CPU) and ``compile`` (torch.compile,
whose one-off compile time is excluded and printed), e.g.

    python benchmarks/train_speed.py --channels 32 --n-amms 2 --n-am 1 --lr-patch 32 \
        --nl-modes full --variants eager cl bf16 cl+bf16 cl+bf16+compile

``eager`` alone follows the device's training defaults (CUDA: bf16 + channels-last). Peak
memory is the CUDA allocator's peak
on a GPU and, on the CPU, the growth of peak RSS in a fresh process per mode.
``--rows full:eager naive:cl+bf16 ...`` names rows directly instead of the product of
modes and variants. Rows print as they finish; a row that fails (out of memory, a
compile error) is reported and the others still run; ``--json FILE`` keeps them all.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import torch
import torch.nn.functional as F

from amms_lib.errors import AmmsError
from amms_lib.memory import fresh_process
from amms_lib.models import build_model
from amms_lib.non_local import MODES as NL_MODES
from amms_lib.runtime import ArgumentParser, cli, require_at_least, resolve_device
from amms_lib.scales import check_scale
from amms_lib.studies import check_new_results, measurement_kind, stamp

VARIANT_PARTS = {"eager", "cl", "bf16", "compile"}
KIND = measurement_kind("train_speed", {"header", "rows"}, {"mode"})


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(args, row: str, device: torch.device) -> dict:
    nl_mode, variant = row.split(":")
    parts = set(variant.split("+"))
    cuda = device.type == "cuda"
    cl = "cl" in parts or (cuda and variant == "eager")
    amp = "bf16" in parts or (cuda and variant == "eager" and args.amp)
    torch.manual_seed(0)
    net = build_model("amms", args.scale, channels=args.channels, n_amms=args.n_amms,
                      n_am=args.n_am, nl_mode=nl_mode).to(device)
    if cl:
        net = net.to(memory_format=torch.channels_last)
    model = torch.compile(net) if (args.compile or "compile" in parts) else net
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    lr_b = torch.rand(args.batch_size, 3, args.lr_patch, args.lr_patch, device=device)
    hr_b = torch.rand(args.batch_size, 3, args.lr_patch * args.scale,
                      args.lr_patch * args.scale, device=device)
    if cl:
        lr_b = lr_b.contiguous(memory_format=torch.channels_last)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = F.l1_loss(model(lr_b).float(), hr_b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    t_warm = time.perf_counter()
    for _ in range(args.warmup):
        step()
    t_warm = time.perf_counter() - t_warm
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss0 = peak_rss_mb()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    mem = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
           else peak_rss_mb() - rss0)
    return {"mode": row, "warmup_s": t_warm, "it_s": args.steps / dt,
            "patches_s": args.steps * args.batch_size / dt, "peak_mb": mem,
            "params": sum(p.numel() for p in net.parameters()),
            # compile + bf16 + channels-last gave NaN gradients on the CPU
            "finite": bool(torch.isfinite(loss)) and all(
                torch.isfinite(p.grad).all() for p in net.parameters()
                if p.grad is not None)}


def main() -> None:
    ap = ArgumentParser(description=__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr-patch", type=int, default=48, help="LR patch side")
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--n-amms", type=int, default=4)
    ap.add_argument("--n-am", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--nl-modes", nargs="+", default=["full", "naive"])
    ap.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--variants", nargs="+", default=["eager"],
                    help="eager, or any of cl, bf16, compile joined by '+'")
    ap.add_argument("--compile", action="store_true", help="compile every row")
    ap.add_argument("--rows", nargs="+", help="mode:variant rows, not the product")
    ap.add_argument("--json", help="also write the header and rows to this JSON file")
    ap.add_argument("--overwrite", action="store_true",
                    help="let --json replace an existing file")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one mode, print JSON
    args = ap.parse_args()
    if args.one:  # a child of the run below: it prints its row, the parent writes --json
        print(json.dumps(measure(args, args.one, resolve_device(args.device))))
        return
    check_scale(args.scale)
    require_at_least(args, batch_size=1, lr_patch=1, channels=1, n_amms=1, n_am=1, steps=1,
                     warmup=0)
    todo = args.rows or [f"{m}:{v}" for m in args.nl_modes for v in args.variants]
    if twice := sorted({r for r in todo if todo.count(r) > 1}):
        raise AmmsError(f"rows {', '.join(twice)} named twice; name each row once")
    for row in todo:  # a misspelt row is refused before any work, not measured as failed
        mode, _, variant = row.partition(":")
        if mode not in NL_MODES or not set(variant.split("+")) <= VARIANT_PARTS:
            raise AmmsError(f"row {row!r}: write NL_MODE:VARIANT with NL_MODE one of "
                            f"{', '.join(NL_MODES)} and VARIANT eager or any of cl, bf16, "
                            "compile joined by '+'")
    out = check_new_results(args.json, args.overwrite, KIND)
    device = resolve_device(args.device)
    name = (torch.cuda.get_device_name() if device.type == "cuda"
            else f"cpu x{torch.get_num_threads()}")
    header = (f"device {name}, torch {torch.__version__}, batch {args.batch_size} of "
              f"{args.lr_patch}x{args.lr_patch} LR at x{args.scale}, AMMS {args.channels} "
              f"channels, {args.n_amms} x AMMS, M={args.n_am}; {args.steps} timed steps "
              f"after {args.warmup}")
    print(header)
    print(f"{'nl_mode:variant':<24}{'params':>10}{'it/s':>8}{'patches/s':>11}{'peak MB':>9}"
          f"{'warm-up s':>11}{'vs first':>10}", flush=True)
    rows = []
    try:
        for row in todo:  # a fresh process each (clean peak memory, failures contained),
            got = fresh_process([__file__, *sys.argv[1:], "--one", row])  # given this command
            if isinstance(got, str):
                rows.append({"mode": row, "error": got})
                print(f"{row:<24}failed: {got[:200]}", flush=True)
            else:
                r = got[-1]
                first = next(x for x in rows + [r] if "it_s" in x)
                rows.append(r)
                print(f"{r['mode']:<24}{r['params']:>10,}{r['it_s']:>8.2f}"
                      f"{r['patches_s']:>11.1f}{r['peak_mb']:>9.0f}{r['warmup_s']:>11.1f}"
                      f"{r['it_s'] / first['it_s']:>9.2f}x"
                      + ("" if r["finite"] else "  NaN/Inf loss or gradients"), flush=True)
    except KeyboardInterrupt:  # a run cut short keeps what it measured, beside the file
        if out and rows:
            print(out.keep_partial(stamp({"header": header, "rows": rows},
                                         precision="per row (its mode)"), "interrupted"))
        raise
    if out and not any("it_s" in r for r in rows):  # failures only: nothing to replace with
        raise AmmsError(f"no row was measured (each failed, above): {out.path} not written")
    if out:
        out.write(stamp({"header": header, "rows": rows}, precision="per row (its mode)"),
                  indent=2)
        print(out.said())


if __name__ == "__main__":
    raise SystemExit(cli(main))  # Ctrl-C, an AmmsError: one line
