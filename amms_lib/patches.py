"""Training patches: random HR crops with their bicubic LR, reproducible from a seed.

Paper section 4.2: batches of random 192x192 HR patches from T91 + BSD200, with random
flips and 90-degree rotations; LR made by MATLAB-style bicubic. The LR of every whole
training image is made once (``amms_lib.resize``, clamp borders like the benchmark
files) and cached on disk under a key of the file list, the scale and the resize
version; a patch is then an aligned crop of LR and HR, so making LR never slows a GPU.

Every image is used: one smaller than the patch (51 of T91's 91 images at 192 px) is
extended to the patch size by mirror reflection of its HR (``np.pad(mode="symmetric")``,
the border MATLAB's imresize itself assumes) and its LR is remade from the extended HR,
so LR and HR stay exactly consistent.

Sample ``i`` depends only on (seed, i): any worker, any number of processes and any
resumed run draw the same patch for the same index, which makes resuming exact.
"""
from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from amms_lib import copies, data
from amms_lib.errors import AmmsError
from amms_lib.images import as_rgb, read_image
from amms_lib.resize import imresize
from amms_lib.runtime import atomic_save, repo_root

TRAIN_SETS = ("T91", "BSD200")
CACHE_VERSION = "6"  # bump when the LR recipe or the images kept change


def builtin_only(sets) -> bool:
    """Whether the training sets are the built-in skimage images alone, asked for by name
    (``data.BUILTIN``, or its alias ``builtin``): a demo run that needs no data folder."""
    return tuple(data.canonical(s) for s in sets) == (data.BUILTIN,)


def train_files(sets=TRAIN_SETS, root: Path | None = None) -> list[Path]:
    """Image files of the training sets under ``<data>/train/<set>/``, less the held-out
    validation split (``data.HELDOUT_IMAGES``): no held-out image is ever a patch."""
    root = data.data_root() if root is None else Path(root)
    if root is None:
        return []
    if builtin_only(sets):
        return []
    for name in sets:  # a path ("BSD200/", "./BSD200") opens the set but names no split
        if not name or name in (".", "..") or "/" in name or os.sep in name:
            raise AmmsError(f"training set {name!r}: name a folder under {root / 'train'} "
                            f"by its name alone (e.g. {Path(name).name or 'T91'!r})")
    if twice := sorted({s for s in sets if list(sets).count(s) > 1}):
        raise AmmsError(f"training sets: {', '.join(twice)} named twice (each of its images "
                        "would count double); name each set once")
    files = []
    for name in sets:
        folder = root / "train" / name
        data.check_link(folder, f"training set {name!r}: ")
        if not folder.is_dir() and data.canonical(name) == data.BUILTIN:
            raise AmmsError(f"training set {name!r}: the built-in skimage images are a demo "
                            f"set that trains alone (--train-sets {data.BUILTIN}), never "
                            "beside a data folder's sets")
        if not folder.is_dir():
            available = sorted(p.name for p in (root / "train").glob("*") if p.is_dir())
            raise AmmsError(f"training set {name!r} not found at {folder}; "
                            f"available: {available}")
        held = set(data.HELDOUT_IMAGES.get(name, ()))
        found = [p for p in data.image_files(folder) if p.stem not in held]
        if not found:
            raise AmmsError(f"training set {name!r} at {folder} holds no images "
                            f"({', '.join(sorted(data.IMAGE_SUFFIXES))})")
        files += found
    return files


def _check_id() -> str:
    """The held-out check's own version: its code (``copies``) and thresholds. A cache
    made by an earlier check (which let a copy through) is built, and checked, again."""
    source = Path(copies.__file__).read_bytes() + f"{data.THUMB_SIDE},{data.NEAR}".encode()
    return hashlib.sha1(source).hexdigest()[:12]


def load_pairs(files: list[Path], scale: int, cache_dir: Path | None = None
               ) -> tuple[list[np.ndarray], list[np.ndarray], str]:
    """(HR list, LR list, cache key); HR mod-cropped, LR made once and cached. A held-out
    image is refused: under another name, flipped or rotated (``data.heldout_ids``),
    re-encoded or rescaled (``data.near_heldout``), trimmed, padded or framed
    (``copies.contains``). Files with the same pixels are one image, used once, and a
    note says so."""
    if files:
        stamp = "\n".join(f"{f.resolve()}:{f.stat().st_size}:{f.stat().st_mtime_ns}"
                          for f in files)
    else:  # no data folder: a few images shipped with scikit-image
        stamp = "builtin:" + ",".join(data.BUILTIN_IMAGES)
    # the held-out images' pixels as well: a cache checked before they were in the data
    # folder (or were other files) is built again, and checked again
    held = data.heldout_ids() if files else {}
    held_stamp = ",".join(sorted(held)) + "|" + _check_id() if files else ""
    key = hashlib.sha1(f"{CACHE_VERSION}|x{scale}|{stamp}|{held_stamp}"  # any file name
                       .encode("utf-8", "surrogateescape")).hexdigest()[:16]
    cache = (cache_dir or repo_root() / "runs" / "cache") / f"train_x{scale}_{key}.pt"
    if cache.is_file():
        try:
            blob = torch.load(cache, weights_only=True)
            hrs, lrs = [t.numpy() for t in blob["hr"]], [t.numpy() for t in blob["lr"]]
            if not hrs or len(hrs) != len(lrs) or any(  # a foreign file loads but misfits
                    h.ndim != 3 or h.shape[:2] != (lo.shape[0] * scale, lo.shape[1] * scale)
                    for h, lo in zip(hrs, lrs)):
                raise ValueError("HR and LR lists do not match")
            if blob.get("note"):
                print(blob["note"], file=sys.stderr)
            return hrs, lrs, key
        except Exception as exc:  # noqa: BLE001  any failure means a damaged cache file
            print(f"warning: {cache}: damaged LR cache ({type(exc).__name__}); rebuilding it",
                  file=sys.stderr)
    note = ""
    if files:
        seen, twice = {}, []
        thumbs, windows = data.heldout_thumbnails(), data.heldout_windows()
        hrs = []
        for f in files:
            img = read_image(f)
            pid = data.array_id(img)
            # a held-out image (train_files leaves them out by name), or a copy of one under
            # another name, flipped, rotated, re-encoded, rescaled, trimmed or padded
            if copy := (held.get(pid) or data.near_heldout(img, thumbs)
                        or copies.contains(img, windows)):
                raise AmmsError(f"{f} is a copy of a held-out validation image ({copy}, "
                                "or a flip, rotation, re-encoding, rescale, trim or padding "
                                "of it): "
                                "training on it would score the network on what it learned; "
                                "remove it")
            first = seen.setdefault(pid, f)
            if first != f and frozenset({first.stem, f.stem}) not in \
                    data.STANDARD_TWINS.get(f.parent.name, ()):  # a PNG copy of a JPEG...
                twice.append(f.name)
                continue
            hrs.append(as_rgb(data.modcrop(img, scale)))
        if twice:
            note = (f"note: {data.two_files('training', twice)} (the same pixels as another "
                    f"file): the {len(twice)} duplicate(s) dropped, each image trained on once; "
                    "keep one of each")
            print(note, file=sys.stderr)
    else:
        hrs = [as_rgb(data.modcrop(data.load_hr(data.BUILTIN, n), scale))
               for n in data.BUILTIN_IMAGES]
    lrs = [imresize(hr, 1 / scale, border="clamp") for hr in hrs]
    try:
        atomic_save({"hr": [torch.from_numpy(h) for h in hrs],
                     "lr": [torch.from_numpy(lo) for lo in lrs], "note": note}, cache)
    except (OSError, RuntimeError) as exc:  # a folder at its path, runs/cache a file, a full disk
        print(f"warning: {cache}: the LR cache could not be written ({exc}); training goes "
              "on without it", file=sys.stderr)
    return hrs, lrs, key


class PatchDataset(Dataset):
    """Item ``i`` -> (LR, HR) float tensors (3, p/s, p/s) and (3, p, p) in [0, 1]."""

    def __init__(self, hrs, lrs, scale: int, patch_size: int, seed: int = 0,
                 augment: bool = True):
        if patch_size < scale or patch_size % scale:
            raise AmmsError(f"patch_size {patch_size} must be a positive multiple of "
                            f"scale {scale}")
        if not hrs:
            raise AmmsError("no training images")
        self.hrs, self.lrs, self.padded = [], [], 0
        for hr, lr in zip(hrs, lrs):
            if min(hr.shape[:2]) < patch_size:  # too small for one patch: mirror-extend
                hr = pad_to(hr, patch_size)
                lr = imresize(hr, 1 / scale, border="clamp")
                self.padded += 1
            self.hrs.append(hr)
            self.lrs.append(lr)
        self.scale, self.patch, self.seed, self.augment = scale, patch_size, seed, augment

    def describe(self) -> str:
        """One line: how many images feed the patches, and how many were extended."""
        return (f"{len(self.hrs)} training images, {self.patch}x{self.patch} HR patches; "
                f"{self.padded} smaller than the patch, mirror-extended to it")

    def __len__(self) -> int:
        return 2**62  # indexed by global sample number; the sampler decides how many

    def __getitem__(self, i: int):
        rng = np.random.default_rng((self.seed, i))
        k = rng.integers(len(self.lrs))
        lr_img, hr_img, s = self.lrs[k], self.hrs[k], self.scale
        p = self.patch // s
        y, x = rng.integers(lr_img.shape[0] - p + 1), rng.integers(lr_img.shape[1] - p + 1)
        lr_p = lr_img[y : y + p, x : x + p]
        hr_p = hr_img[y * s : (y + p) * s, x * s : (x + p) * s]
        if self.augment:
            hflip, vflip, rot = rng.random(3) < 0.5
            for flag, op in ((hflip, np.fliplr), (vflip, np.flipud), (rot, np.rot90)):
                if flag:
                    lr_p, hr_p = op(lr_p), op(hr_p)
        to_t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)  # noqa
        return to_t(lr_p).float().div(255), to_t(hr_p).float().div(255)


def pad_to(hr: np.ndarray, size: int) -> np.ndarray:
    """Extend (H, W, 3) uint8 by symmetric reflection to at least ``size`` per side (a
    side that was a multiple of the scale stays one, since ``size`` is); an image is
    reflected again if one copy is not enough."""
    h, w = hr.shape[:2]
    ph, pw = max(0, size - h), max(0, size - w)
    return np.pad(hr, ((0, ph), (0, pw), (0, 0)), mode="symmetric")  # (size, size, 3) at least


class StepBatchSampler(Sampler):
    """Batches of global sample indices for steps ``start .. stop-1`` of one rank.

    Step t of rank r in a world of w processes takes samples
    ``(t * w + r) * batch_size + [0, batch_size)``.
    """

    def __init__(self, start: int, stop: int, batch_size: int, rank: int = 0, world: int = 1):
        self.start, self.stop, self.batch = start, stop, batch_size
        self.rank, self.world = rank, world

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self):
        for t in range(self.start, self.stop):
            first = (t * self.world + self.rank) * self.batch
            yield list(range(first, first + self.batch))
