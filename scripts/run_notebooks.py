"""Execute the notebook suite in order with papermill, then print the benchmark table.

    python scripts/run_notebooks.py [--mode quick|full] [--only 05 07] [-p NAME VALUE ...]

Executed copies go to runs/executed/<notebook>; each notebook's own outputs to
runs/<notebook>/default/; curated figures to figures/ (AMMS_FIGURES redirects them).
Stops at the first failing notebook and says which. Kernels get CurveZMQ keys from
the kernel manager (transport_encryption="auto"), so ipykernel has no reason to warn
that it runs over TCP without encryption.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import papermill
from jupyter_client import KernelManager
from traitlets.config import Config

from amms_lib import data, runtime
from amms_lib.benchmark import format_table
from amms_lib.errors import AmmsError

ROOT = Path(__file__).resolve().parents[1]
# the python3 kernelspec declares "supported_encryption": ["curve"]: the kernel
# manager provisions CurveZMQ keys (newer jupyter_client; older ones have no such option)
KERNEL_CONFIG = Config({"KernelManager": {"transport_encryption": "auto"}}
                       if "transport_encryption" in KernelManager.class_trait_names()
                       else {})


def rel(path: Path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", default="quick", choices=["quick", "full", "auto"])
    ap.add_argument("--only", nargs="+", default=[], help="notebook number prefixes")
    ap.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="a parameter for every notebook that has it")
    args = ap.parse_args()
    notebooks = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if args.only:
        notebooks = [nb for nb in notebooks if nb.name[:2] in args.only]
    out_dir = ROOT / "runs" / "executed"
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        root = data.data_root()
    except AmmsError as exc:  # AMMS_DATA names a missing folder
        print(exc)
        return 2
    if root is None:
        print(f"no data folder (AMMS_DATA unset, no {rel(ROOT / 'data')}/): using the "
              f"built-in {data.BUILTIN} images; for the real benchmark run "
              "`python -m amms_lib.data fetch --dest data`", flush=True)
    t_all, started = time.perf_counter(), time.time()
    for nb in notebooks:
        known = papermill.inspect_notebook(str(nb))
        params = {"mode": args.mode, **{k: v for k, v in args.p if k in known}}
        t0 = time.perf_counter()
        try:
            papermill.execute_notebook(str(nb), str(out_dir / nb.name), parameters=params,
                                       kernel_name="python3", progress_bar=False,
                                       cwd=str(ROOT / "notebooks"), config=KERNEL_CONFIG)
        except papermill.PapermillExecutionError as exc:
            print(f"{nb.name:<32}FAILED\n{exc.ename}: {exc.evalue}\nsee {out_dir / nb.name}")
            return 1
        print(f"{nb.name:<32}{time.perf_counter() - t0:6.1f} s", flush=True)
    print(f"{'all notebooks':<32}{time.perf_counter() - t_all:6.1f} s")
    table = ROOT / "runs" / "07_benchmark" / "default" / "table.json"
    if table.is_file() and table.stat().st_mtime >= started:  # written by this run
        results = json.loads(table.read_text())
        print("\nbenchmark (notebook 07, measured here; PSNR/SSIM on Y):")
        for model in dict.fromkeys(r["model"] for r in results["results"]):
            print(format_table([r for r in results["results"] if r["model"] == model]))
        if results["missing"]:
            print("no checkpoint for: " + ", ".join(f"{m} x{s}" for m, s in results["missing"]))
    print(f"\nexecuted notebooks, with their outputs: {rel(out_dir)}/ "
          f"(open them: .venv/bin/jupyter lab {rel(out_dir)})\n"
          f"figures: {rel(runtime.figures_dir())}/; each notebook's own files: "
          "runs/<notebook>/default/\n"
          "to run and change the notebooks yourself, widgets included: make lab")
    return 0


if __name__ == "__main__":
    sys.exit(main())
