"""Speed of amms_lib.resize.imresize against the float64 NumPy reference (reference_resize.py,
which tests/test_resize.py checks it against).

    python benchmarks/resize_speed.py [--repeat 3]

Prints milliseconds per RGB image (uint8 in, uint8 out, MATLAB rounding per pass)
and the speed-up, for a few sizes and factors, on this machine's CPU; with a GPU,
also the batched torch time on it.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch
from reference_resize import reference_resize  # the sibling: the tests' float64 reference

from amms_lib.resize import imresize
from amms_lib.runtime import ArgumentParser, cli


def best_of(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times) * 1e3


def main() -> None:
    ap = ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if args.repeat < 1:
        ap.error("--repeat must be 1 or more")
    rng = np.random.default_rng(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'size':>10} {'factor':>7} {'torch ms':>9} {'numpy ms':>9} {'speed-up':>9}")
    for side in (128, 256, 512):
        img = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        for factor in (1 / 4, 1 / 2, 2, 4):
            out = tuple(math.ceil(round(side * factor, 8)) for _ in range(2))
            t_torch = best_of(lambda: imresize(img, factor), args.repeat)
            t_ref = best_of(lambda: reference_resize(img, out, (factor, factor),
                                                     round_each_pass=True), 1)
            print(f"{side:>5}x{side:<4} {factor:>7.3g} {t_torch:>9.1f} {t_ref:>9.1f} "
                  f"{t_ref / t_torch:>8.1f}x")
    if torch.cuda.is_available():
        batch = torch.randint(0, 256, (16, 3, 512, 512), dtype=torch.uint8).cuda()
        ms = best_of(lambda: (imresize(batch, 1 / 4), torch.cuda.synchronize()),
                     args.repeat)
        print(f"cuda: 16 x 512x512 uint8, x1/4: {ms:.1f} ms per batch")


if __name__ == "__main__":
    raise SystemExit(cli(main))  # Ctrl-C: one line
