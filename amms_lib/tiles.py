"""Tile geometry: how an LR image is cut into overlapping windows. The lowest layer of
the upscaling code (``inference`` runs the windows, ``speed`` times them); it imports nothing
of the library."""
from __future__ import annotations

OVERLAP = 8  # LR context per tile side: 8 scored as 16 (within 0.008 dB, 95%) and ran
# 1.1-1.7x faster with 64-px tiles (README, benchmarks/results/upscale_tiles_overlap8.json)
TILES = (512, 384, 256, 192, 128, 96, 64, 48, 32)  # sizes ``--tile`` suggestions use


def spans(n: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Tiles along one axis of length ``n``: (core start, core stop, in start, in stop).

    Cores have size ``tile`` (the last one is moved back to end at ``n``, so it
    overlaps its neighbour instead of being a sliver); inputs add ``overlap``.
    """
    tile = min(tile, n)
    starts = list(range(0, n - tile, tile)) + [n - tile]
    return [(a, a + tile, max(a - overlap, 0), min(a + tile + overlap, n))
            for a in starts]
