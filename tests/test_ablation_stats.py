"""The CPU ablation's analysis (amms_lib.ablation_stats) on a made-up record."""
import pytest

from amms_lib import ablation_stats


def run(variant, seed, psnr, precision=None):
    sets = {"Set5": {"psnr": psnr, "ssim": 0.9, "per_image": {"a": [psnr, 0.9]}}}
    return {"variant": variant, "seed": seed, "params": 1, "steps": 10, "train_minutes": 1,
            "sets": sets, **({"precision": precision} if precision else {})}


def test_an_effect_with_a_pair_in_another_precision_says_so_and_gives_the_rest():
    runs = [run("all", s, 30 + s) for s in range(3)] + [
        run("all-so", 0, 29.9), run("all-so", 1, 30.9), run("all-so", 2, 31.5, "float32")]
    e = ablation_stats.effect({"runs": runs}, "all", "all-so", "Set5")
    assert e["per_seed"] == pytest.approx([0.1, 0.1, 0.5]) and e["n"] == 3
    assert e["mixed_precision_seeds"] == [2]
    assert e["same_precision"]["n"] == 2 and e["same_precision"]["mean"] == pytest.approx(0.1)
    same = [run("all", 0, 30), run("all-so", 0, 29)]
    assert "mixed_precision_seeds" not in ablation_stats.effect({"runs": same}, "all",
                                                                "all-so", "Set5")
