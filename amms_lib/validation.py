"""Validation: exactly the pixels a run scores (``validation_pairs``) and the score of a
network on them (``validate``), so that a baseline can be scored on the same ones."""
from __future__ import annotations

import numpy as np

from amms_lib import data
from amms_lib.inference import upscale
from amms_lib.metrics import evaluate
from amms_lib.train_config import TrainConfig, val_set_name


def validation_pairs(cfg: TrainConfig) -> tuple[str, list[tuple[np.ndarray, np.ndarray]]]:
    """(set name, [(LR, HR), ...]): exactly the pixels ``validate`` scores, so that a
    baseline (bicubic) can be scored on the same ones: the first ``val_images`` of the
    set (the built-in images without a data folder), as centre crops of at most
    ``val_max_side`` LR pixels when that is set."""
    name = val_set_name(cfg)
    pairs = []
    for image in data.list_images(name)[: cfg.val_images or None]:
        pair = data.load_pair(name, image, cfg.scale)
        lr_img, hr_img = pair.lr, pair.hr
        if cfg.val_max_side:  # quick runs: a centre crop, aligned in LR and HR
            (h, w), m, s = lr_img.shape[:2], cfg.val_max_side, cfg.scale
            y, x = max(0, (h - m) // 2), max(0, (w - m) // 2)
            lr_img = lr_img[y : y + m, x : x + m]
            hr_img = hr_img[y * s : (y + m) * s, x * s : (x + m) * s]
        pairs.append((lr_img, hr_img))
    return name, pairs


def pairs_id(pairs) -> str:
    """A short hash of the validation pixels: one curve must score one set of pixels (a
    resumed run with another data folder would score other images under the same name)."""
    import hashlib

    h = hashlib.sha256()
    for lr_img, hr_img in pairs:
        h.update(np.ascontiguousarray(lr_img).tobytes())
        h.update(np.ascontiguousarray(hr_img).tobytes())
    return h.hexdigest()[:16]


def validate(net, cfg: TrainConfig) -> dict:
    """Mean PSNR/SSIM (Y, shaved) of the current network on the validation set, the set's
    name and the id of the pixels scored (``pairs_id``)."""
    name, pairs = validation_pairs(cfg)
    was_training = net.training
    net.eval()
    scores = [evaluate(upscale(net, lr_img), hr_img, cfg.scale) for lr_img, hr_img in pairs]
    net.train(was_training)
    return {"val_set": name, "val_pixels": pairs_id(pairs),
            "psnr": float(np.mean([s[0] for s in scores])),
            "ssim": float(np.mean([s[1] for s in scores]))}
