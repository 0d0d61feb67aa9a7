"""Execute the notebook suite in order with papermill, render it as an HTML course, then
print the benchmark table.

    python scripts/run_notebooks.py [--mode quick|full] [--only 05 07] [-p NAME VALUE ...]
        [--figures DIR]

Executed copies, with their figures inline, go to runs/executed/<notebook>; the HTML course
(index.html and one page per notebook, figures included, readable without a kernel) to
runs/course/; each notebook's own outputs to runs/<notebook>/default/; the figures the
notebooks save to runs/figures/, so the checkout stays clean (``--figures figures`` is how
the curated figures/ are regenerated: ``make figures``). Each notebook is announced with its
expected time before it starts. Stops at the first failing notebook and says which.
Kernels get CurveZMQ keys from
the kernel manager (transport_encryption="auto"), so ipykernel has no reason to warn
that it runs over TCP without encryption.
"""
from __future__ import annotations

import argparse
import html
import json
import os
import sys
import time
from pathlib import Path

import papermill
from jupyter_client import KernelManager
from traitlets.config import Config

from amms_lib import data, runtime
from amms_lib.benchmark import format_table
from amms_lib.errors import AmmsError
from amms_lib.run_folders import run_folder
from amms_lib.runtime import ArgumentParser

ROOT = Path(__file__).resolve().parents[1]
# the python3 kernelspec declares "supported_encryption": ["curve"]: the kernel
# manager provisions CurveZMQ keys (newer jupyter_client; older ones have no such option)
KERNEL_CONFIG = Config({"KernelManager": {"transport_encryption": "auto"}}
                       if "transport_encryption" in KernelManager.class_trait_names()
                       else {})


# rough quick-mode seconds of each notebook on 2 cores (from runs on 2-core EPYCs), printed
# before it starts; once this checkout has run the suite, its own last times replace them
QUICK_SECONDS = {"00": 20, "01": 15, "02": 35, "03": 25, "04": 20, "05": 150, "06": 25,
                 "07": 80, "08": 25, "09": 5}
TIMES = ROOT / "runs" / "executed" / "times.json"


def expected(nb: Path, mode: str, last: dict) -> str:
    if nb.name in last:
        return f"about {last[nb.name]:.0f} s (its last run here)"
    if mode == "quick" and nb.name[:2] in QUICK_SECONDS:
        return f"about {QUICK_SECONDS[nb.name[:2]]} s on 2 cores"
    return "time unknown (full mode: see the notebook's first cells)"


def render_course(executed: list[Path], dest: Path) -> Path:
    """Each executed notebook as an HTML page (nbconvert's lab template, figures embedded),
    and an index page linking them in order; returns the index."""
    from nbconvert import HTMLExporter

    dest.mkdir(parents=True, exist_ok=True)
    exporter = HTMLExporter(template_name="lab")
    items = []
    for nb in executed:
        body, _ = exporter.from_filename(str(nb))
        page = dest / (nb.stem + ".html")
        runtime.atomic_write(page, lambda f, b=body: f.write(b), "w")
        title = nb.stem.replace("_", " ", 1).replace("_", " ")
        items.append(f'<li><a href="{page.name}">{html.escape(title)}</a></li>')
    index = dest / "index.html"
    text = ("<!doctype html><meta charset='utf-8'><title>AMMS-SR course</title>"
            "<h1>AMMS-SR: the executed course</h1><p>Each notebook as it ran here, with its "
            "figures and outputs. To run and change them: <code>make lab</code>.</p><ol>"
            + "".join(items) + "</ol>")
    runtime.atomic_write(index, lambda f: f.write(text), "w")
    return index


def rel(path: Path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def main() -> int:
    ap = ArgumentParser(description=__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", default="quick", choices=["quick", "full", "auto"])
    ap.add_argument("--only", nargs="+", default=[], help="notebook number prefixes")
    ap.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="a parameter for every notebook that has it")
    ap.add_argument("--figures", default=str(ROOT / "runs" / "figures"),
                    help="where the notebooks save their figures (figures: the curated ones)")
    args = ap.parse_args()
    # the kernels inherit these: figures drawn inline into the executed copies (not Agg,
    # which draws nothing), saved outside the tracked figures/ unless asked
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    os.environ["AMMS_FIGURES"] = str(Path(args.figures).resolve())
    os.environ.setdefault("TQDM_DISABLE", "1")  # an executed bar is stored frozen at 0%
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
    last = json.loads(TIMES.read_text()) if TIMES.is_file() and args.mode == "quick" else {}
    total = sum(last.get(nb.name, QUICK_SECONDS.get(nb.name[:2], 0)) for nb in notebooks)
    if args.mode == "quick":
        print(f"{len(notebooks)} notebooks, quick mode: about {total / 60:.0f} minutes in all",
              flush=True)
    times = {}
    for i, nb in enumerate(notebooks, 1):
        known = papermill.inspect_notebook(str(nb))
        params = {"mode": args.mode, **{k: v for k, v in args.p if k in known}}
        print(f"[{i}/{len(notebooks)}] {nb.name}: {expected(nb, args.mode, last)} ...",
              flush=True)
        t0 = time.perf_counter()
        try:
            papermill.execute_notebook(str(nb), str(out_dir / nb.name), parameters=params,
                                       kernel_name="python3", progress_bar=False,
                                       cwd=str(ROOT / "notebooks"), config=KERNEL_CONFIG)
        except papermill.PapermillExecutionError as exc:
            print(f"{nb.name:<32}FAILED\n{exc.ename}: {exc.evalue}\nsee {out_dir / nb.name}")
            return 1
        times[nb.name] = time.perf_counter() - t0
        print(f"{nb.name:<32}{times[nb.name]:6.1f} s", flush=True)
    print(f"{'all notebooks':<32}{time.perf_counter() - t_all:6.1f} s")
    if args.mode == "quick" and not args.p:
        runtime.atomic_write(TIMES, lambda f: f.write(json.dumps({**last, **times})), "w")
    index = render_course([out_dir / nb.name for nb in notebooks], ROOT / "runs" / "course")
    table = Path(run_folder("07_benchmark", "default")) / "table.json"
    if table.is_file() and table.stat().st_mtime >= started:  # written by this run
        results = json.loads(table.read_text())
        print("\nbenchmark (notebook 07, measured here; PSNR/SSIM on Y):")
        for model in dict.fromkeys(r["model"] for r in results["results"]):
            print(format_table([r for r in results["results"] if r["model"] == model]))
        if results["missing"]:
            print("no checkpoint for: " + ", ".join(f"{m} x{s}" for m, s in results["missing"]))
    print(f"\nthe course as it ran, figures included: {rel(index)} (open it in a browser)\n"
          f"executed notebooks: {rel(out_dir)}/ (.venv/bin/jupyter lab {rel(out_dir)})\n"
          f"figures: {rel(runtime.figures_dir())}/; each notebook's own files: "
          f"{rel(Path(run_folder('<notebook>', 'default')))}/\n"
          "to run and change the notebooks yourself, widgets included: make lab")
    return 0


if __name__ == "__main__":
    sys.exit(main())
