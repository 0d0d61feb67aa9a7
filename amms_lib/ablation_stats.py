"""The analysis of ``benchmarks/ablation_cpu.py``'s runs: per variant mean and spread, per idea the
paired effect with a 95% interval, and which effects are resolved.

The unit of noise is the training run: an effect is the per-seed difference of two
variants trained on the same patches in the same order (paired), its interval a Student
t interval over seeds (df = seeds - 1). "Resolved" means the interval excludes 0. The
share of images that the idea improves (pooled over seeds) is descriptive only.
"""
from __future__ import annotations

from statistics import mean, stdev

from amms_lib.stats import paired_interval as interval  # the one rule, re-exported

SETS = ("Set5", "Set14", "BSD100", "heldout")
# idea -> (variant with it, variant without it), at both ends of the design
EFFECTS = {
    "non_local": {"added to all-off": ("nl", "none"), "removed from all-on": ("all", "all-nl")},
    "second_order": {"added to all-off": ("so", "none"),
                     "removed from all-on": ("all", "all-so")},
    "multiscale": {"added to all-off": ("ms", "none"), "removed from all-on": ("all", "all-ms")},
    "all three": {"equal steps": ("all", "none"), "equal minutes": ("all", "none@all-minutes")},
}


def _by_seed(runs: list[dict], variant: str) -> dict[int, dict]:
    return {r["seed"]: r for r in runs if r["variant"] == variant}


def variant_table(record: dict) -> dict:
    """variant -> {params, seeds, minutes, set: {mean, sd, margin over bicubic}}."""
    table = {}
    for variant in sorted({r["variant"] for r in record["runs"]}):
        runs = list(_by_seed(record["runs"], variant).values())
        row = {"params": runs[0]["params"], "seeds": sorted(r["seed"] for r in runs),
               "steps": mean(r["steps"] for r in runs),
               "train_minutes": mean(r["train_minutes"] for r in runs)}
        if "gflops_48" in runs[0]:
            row["gflops_48"] = runs[0]["gflops_48"]
        for name in SETS:
            vals = [r["sets"][name]["psnr"] for r in runs if name in r["sets"]]
            if vals:
                row[name] = {"psnr": mean(vals), "sd": stdev(vals) if len(vals) > 1 else None,
                             "ssim": mean(r["sets"][name]["ssim"] for r in runs),
                             "over_bicubic": mean(vals) - record["bicubic"][name]["psnr"]}
        table[variant] = row
    return table


def effect(record: dict, with_v: str, without_v: str, name: str) -> dict | None:
    """The paired effect on one set: per seed, mean PSNR with minus without."""
    a, b = _by_seed(record["runs"], with_v), _by_seed(record["runs"], without_v)
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    diffs = [a[s]["sets"][name]["psnr"] - b[s]["sets"][name]["psnr"] for s in seeds]
    per_image = [a[s]["sets"][name]["per_image"][k][0] - b[s]["sets"][name]["per_image"][k][0]
                 for s in seeds for k in a[s]["sets"][name]["per_image"]]
    # a pair trained in different precisions (bf16 autocast vs float32, on different CPUs)
    # mixes that change into the effect: say which, and the effect without those seeds
    mixed = [s for s in seeds if _precision(a[s]) != _precision(b[s])]
    same = [d for s, d in zip(seeds, diffs) if s not in mixed]
    return {**interval(diffs), "seeds": seeds, "per_seed": diffs,
            "images_improved": sum(d > 0 for d in per_image) / len(per_image),
            **({"mixed_precision_seeds": mixed, "same_precision": interval(same)}
               if mixed and same else {})}


def _precision(run: dict) -> str:
    """What a run trained in (``train.precision_name``); runs before the field: bf16."""
    from amms_lib.train_config import precision_name

    return run.get("precision", precision_name(True))


def analyse(record: dict) -> dict:
    """The variant table, every effect on every set, and a one-line summary of each."""
    effects, summary = {}, {}
    for idea, ends in EFFECTS.items():
        effects[idea] = {}
        for end, (with_v, without_v) in ends.items():
            per_set = {name: effect(record, with_v, without_v, name) for name in SETS}
            effects[idea][end] = {k: v for k, v in per_set.items() if v is not None}
            if effects[idea][end]:
                parts = []
                for name, e in effects[idea][end].items():
                    ci = (f" [{e['ci95'][0]:+.3f}, {e['ci95'][1]:+.3f}]" if e["ci95"]
                          else "")
                    flag = " resolved" if e["resolved"] else ""
                    parts.append(f"{name} {e['mean']:+.3f}{ci}{flag}")
                summary[f"{idea}, {end} ({with_v} - {without_v}, n={e['n']})"] = "; ".join(parts)
    return {"variants": variant_table(record), "effects": effects, "summary": summary}


def markdown(record: dict) -> str:
    """The README's tables: variants (mean, sd, seeds, cost) and effects (95% intervals)."""
    table = variant_table(record)
    order = ["none", "nl", "so", "ms", "all-nl", "all-so", "all-ms", "all", "none@all-minutes"]
    sets = ("Set5", "Set14", "BSD100")
    lines = ["| variant | params | GFLOPs (48x48) | minutes | seeds | "
             + " | ".join(f"{s} dB" for s in sets) + " |",
             "| --- | --- | --- | --- | --- | " + " | ".join("---" for _ in sets) + " |"]
    for v in [v for v in order if v in table]:
        row = table[v]
        cells = [f"{row[s]['psnr']:.2f}" + (f" ± {row[s]['sd']:.3f}" if row[s]["sd"] else "")
                 for s in sets]
        lines.append(f"| {v} | {row['params']:,} | {row.get('gflops_48', 0):.2f} | "
                     f"{row['train_minutes']:.1f} | {len(row['seeds'])} | " + " | ".join(cells)
                     + " |")
    lines.append("| bicubic | | | | | " + " | ".join(
        f"{record['bicubic'][s]['psnr']:.2f}" for s in sets) + " |")
    lines += ["", "| idea | where | " + " | ".join(f"{s}: mean, 95% interval" for s in sets)
              + " |", "| --- | --- | " + " | ".join("---" for _ in sets) + " |"]
    for idea, ends in EFFECTS.items():
        for end, (with_v, without_v) in ends.items():
            cells = []
            for s in sets:
                e = effect(record, with_v, without_v, s)
                if e is None:
                    break
                ci = (f" [{e['ci95'][0]:+.3f}, {e['ci95'][1]:+.3f}]"
                      + (" **resolved**" if e["resolved"] else "")) if e["ci95"] else " (1 seed)"
                if "same_precision" in e:  # the seeds whose pair shares a precision
                    same = e["same_precision"]
                    ci += f"; same precision {same['mean']:+.3f}" + (
                        f" [{same['ci95'][0]:+.3f}, {same['ci95'][1]:+.3f}]" if same["ci95"]
                        else " (1 seed)")
                cells.append(f"{e['mean']:+.3f}{ci}")
            if len(cells) == len(sets):
                lines.append(f"| {idea} | {end} ({with_v} - {without_v}) | "
                             + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    import json
    import sys

    path = sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/ablation_cpu.json"
    with open(path) as f:
        print(markdown(json.load(f)))
