"""The suite as a person uses it: JupyterLab in Chromium, driven by Playwright.

A JupyterLab server from this environment (127.0.0.1, a free port, a token) serves a
copy of the notebooks; Chromium opens each one, runs all cells from the Run menu and
saves it. Checked: no cell ends in an error; in 08 the explorer renders as widgets
(not "Error displaying widget", not its text repr) and picking another image, another
scale or dragging the wipe seam changes the image the page shows; the wipe shows one
method left of the seam and another right of it; a file uploaded through the file
picker is upscaled and shown, with no PSNR (it has no HR). Screenshots go to runs/browser/;
AMMS_UPDATE_FIGURES=1 also refreshes figures/08_explorer.png for the README.

Needs Chromium and Playwright (``chromium_path`` in conftest.py): skipped without
them, a failure with AMMS_REQUIRE_BROWSER=1 (.ci/run). The server and its kernels are
always shut down, also when a test fails.
"""
from __future__ import annotations

import base64
import io
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import papermill
import pytest
from conftest import chromium_path
from PIL import Image

CHROMIUM = chromium_path()  # or the whole module skips (fails in CI), saying why
ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "runs" / "browser"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
RUN_TIMEOUT_S = 420  # one notebook, run all, on a busy 2-core machine
UPDATE_TIMEOUT_S = 120  # one widget change; a new scale reconstructs every method
# the notebook settings a test needs: every cell in the page (no virtual scrolling),
# no autosave, no news or update pop-ups over the cells
SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false", "checkForUpdates": False, "doNotDisturbMode": True},
}
NB = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook"  # the notebook on show
EXPLORER_METHODS = "bicubic,srcnn,lapsrn,amms"  # 08's methods in the browser
BROWSER_NOTEBOOKS = sorted(p.name for pat in ("00_*.ipynb", "01_*.ipynb")
                           for p in (ROOT / "notebooks").glob(pat))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 (localhost)
        return r.read()


def _stray_kernels(tag: str) -> list[int]:
    """Processes whose command line names this server's private runtime folder."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if tag in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(proc.name))
            except OSError:
                pass
    return pids


class Lab:
    """One JupyterLab server on a copy of the notebooks; ``stop`` always cleans up."""

    def __init__(self, work: Path):
        self.work, self.port, self.token = work, free_port(), secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        self.nb_dir = work / "notebooks"
        self.nb_dir.mkdir()
        for name in BROWSER_NOTEBOOKS:
            shutil.copy(ROOT / "notebooks" / name, self.nb_dir / name)
        # 08 with the parameters a reader would pass (papermill, not run): the widgets are
        # under test, not the networks, so the cheap ones and AMMS (VDSR and MemNet run at HR
        # resolution: on 2 AVX2 cores they took most of this test's 200 s)
        papermill.execute_notebook(str(ROOT / "notebooks" / "08_compare.ipynb"),
                                   str(self.nb_dir / "08_compare.ipynb"), prepare_only=True,
                                   parameters={"methods": EXPLORER_METHODS},
                                   kernel_name="python3", progress_bar=False)
        settings = work / "settings"
        for rel, value in SETTINGS.items():
            (settings / rel).parent.mkdir(parents=True, exist_ok=True)
            (settings / rel).write_text(json.dumps(value))
        self.runtime = work / "runtime"  # kernels' connection files: names our kernels
        env = dict(os.environ, AMMS_MODE="quick", TQDM_DISABLE="1",
                   AMMS_FIGURES=str(work / "figures"),  # figures/ stays untouched
                   MPLBACKEND="module://matplotlib_inline.backend_inline",
                   JUPYTERLAB_SETTINGS_DIR=str(settings),
                   JUPYTERLAB_WORKSPACES_DIR=str(work / "workspaces"),
                   JUPYTER_CONFIG_DIR=str(work / "config"),
                   JUPYTER_RUNTIME_DIR=str(self.runtime))
        self.log = open(SHOTS / "lab.log", "w")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyter", "lab", "--no-browser",
             "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}",
             "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
             f"--ServerApp.root_dir={self.nb_dir}", "--LabApp.news_url=",
             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
             "--ServerApp.terminals_enabled=False",
             *(["--allow-root"] if os.geteuid() == 0 else [])],  # CI containers
            env=env, cwd=work, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True)

    def wait_ready(self, timeout: float = 240):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited ({self.proc.returncode}); "
                                   f"see {SHOTS / 'lab.log'}")
            try:
                json.loads(_get(f"{self.url}/api/status?token={self.token}"))
                return
            except OSError:
                time.sleep(0.5)
        raise TimeoutError(f"jupyter lab not up after {timeout} s; see {SHOTS / 'lab.log'}")

    def stop(self):
        try:  # the server's own shutdown also shuts its kernels down
            req = urllib.request.Request(f"{self.url}/api/shutdown", method="POST",
                                         headers={"Authorization": f"token {self.token}"})
            urllib.request.urlopen(req, timeout=10).close()  # noqa: S310 (localhost)
            self.proc.wait(timeout=30)
        except Exception:  # noqa: BLE001 (then by signal)
            for sig in (signal.SIGTERM, signal.SIGKILL):
                if self.proc.poll() is None:
                    os.killpg(self.proc.pid, sig)
                    try:
                        self.proc.wait(timeout=15)
                    except subprocess.TimeoutExpired:
                        pass
        for pid in _stray_kernels(str(self.runtime)):  # kernels run in their own session
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.log.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    SHOTS.mkdir(parents=True, exist_ok=True)
    server = Lab(tmp_path_factory.mktemp("lab"))
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
    assert server.proc.poll() is not None and not _stray_kernels(str(server.runtime))


@pytest.fixture(scope="module")
def browser(lab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chrome = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield chrome
        finally:
            chrome.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1500, "height": 1900})
    context.set_default_timeout(60_000)  # a busy 2-core machine
    try:
        yield context.new_page()
    finally:
        context.close()


def run_notebook(page, lab: Lab, name: str) -> list[dict]:
    """Open ``name``, Run > Run All Cells, wait, save; return the saved code cells."""
    # a workspace of its own: only this notebook open, nothing restored from before
    page.goto(f"{lab.url}/lab/workspaces/{Path(name).stem}/tree/{name}"
              f"?token={lab.token}", timeout=240_000)  # the bundles: slow
    page.locator(f"{NB} .jp-CodeCell").first.wait_for(timeout=240_000)
    page.locator(".jp-StatusBar-Widget", has_text="| Idle").first.wait_for(
        timeout=240_000)  # the kernel is up: "Python 3 (ipykernel) | Idle"
    page.locator(".lm-MenuBar-item", has_text="Run").first.click()
    page.locator(".lm-Menu-item:visible", has_text="Run All Cells").first.click()
    # done: no cell queued or running ("[*]") and the kernel idle again
    page.wait_for_function(
        """nb => {
          const p = [...document.querySelectorAll(nb + ' .jp-CodeCell')]
            .map(c => c.querySelector('.jp-InputPrompt').textContent);
          const idle = document.querySelector(
            ".jp-Notebook-ExecutionIndicator[data-status='idle']");
          return idle && p.length && !p.some(t => t.includes('*'))
            && p.some(t => /\\d/.test(t));
        }""", arg=NB, timeout=RUN_TIMEOUT_S * 1000, polling=1000)
    page.keyboard.press("Control+s")
    path = lab.nb_dir / name
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the saved copy has the outputs
        try:
            cells = [c for c in json.loads(path.read_text())["cells"]
                     if c["cell_type"] == "code"]
        except json.JSONDecodeError:  # caught while the server writes it
            cells = []
        if any(c["outputs"] for c in cells):
            return cells
        time.sleep(0.5)
    raise AssertionError(f"{name} was not saved with its outputs")


def assert_no_errors(page, name: str, cells: list[dict]):
    shot = SHOTS / f"{Path(name).stem}.png"
    page.screenshot(path=shot, full_page=True)
    errors = [(i, o.get("ename"), o.get("evalue")) for i, c in enumerate(cells)
              for o in c["outputs"] if o["output_type"] == "error"]
    assert not errors, f"{name}: cells ended in errors {errors}; see {shot}"
    unrun = [i for i, c in enumerate(cells) if c["execution_count"] is None
             and c["source"].strip()]
    assert not unrun, f"{name}: code cells {unrun} did not run; see {shot}"
    broken = page.get_by_text("Error displaying widget").count()
    assert not broken, f"{name}: {broken} widget(s) failed to display; see {shot}"


@pytest.mark.parametrize("name", BROWSER_NOTEBOOKS)
def test_notebook_runs_in_jupyterlab(page, lab, name):
    assert_no_errors(page, name, run_notebook(page, lab, name))


def image_bytes(page, css: str) -> tuple[str, bytes]:
    """(src, PNG bytes) of the ``<img>`` that an ipywidgets Image shows."""
    img = page.locator(f"{css} img, img{css}").first
    img.wait_for(timeout=30_000)
    src = img.get_attribute("src")
    b64 = img.evaluate("""async el => {
        const b = new Uint8Array(await (await fetch(el.src)).arrayBuffer());
        let s = ''; for (const x of b) s += String.fromCharCode(x); return btoa(s); }""")
    return src, base64.b64decode(b64)


def changed(page, css: str, before: str, what: str) -> bytes:
    """Wait until the widget image ``css`` shows something new; its PNG bytes."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(
            """([css, old]) => { const i = document.querySelector(css + ' img, img' + css);
                                 return i && i.src && i.src !== old; }""",
            arg=[css, before], timeout=UPDATE_TIMEOUT_S * 1000, polling=250)
    except PlaywrightTimeout:
        shot = SHOTS / "08_explorer_failed.png"
        page.screenshot(path=shot, full_page=True)
        pytest.fail(f"{what}: the explorer's {css[6:]} image did not change within "
                    f"{UPDATE_TIMEOUT_S} s; see {shot}")
    return image_bytes(page, css)[1]


def decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def drag_seam(page, fraction: float):
    """Drag the wipe's seam slider handle to ``fraction`` of its track (mouse only)."""
    track = page.locator(".amms-column .noUi-target, .amms-column .slider").first
    handle = page.locator(".amms-column .noUi-handle").first
    box, hb = track.bounding_box(), handle.bounding_box()
    page.mouse.move(hb["x"] + hb["width"] / 2, hb["y"] + hb["height"] / 2)
    page.mouse.down()
    x = box["x"] + fraction * box["width"]
    page.mouse.move(x, hb["y"] + hb["height"] / 2, steps=8)
    page.mouse.up()


def seam_column(img: np.ndarray) -> int:
    """The wipe's marker: the first all-yellow column."""
    yellow = (img == np.array([255, 255, 0])).all(axis=2).all(axis=0)
    assert yellow.any(), "no seam marker in the wipe"
    return int(np.argmax(yellow))


def test_explorer_in_jupyterlab(page, lab):
    name = "08_compare.ipynb"
    cells = run_notebook(page, lab, name)
    assert_no_errors(page, name, cells)
    ui = page.locator(".amms-explorer")
    ui.wait_for(timeout=30_000)
    shot = SHOTS / "08_explorer_first.png"
    ui.screenshot(path=shot)
    texts = " ".join(page.locator(".jp-OutputArea-output").all_inner_texts())
    assert "VBox(" not in texts, f"the explorer shows as text, not widgets; see {shot}"
    for part in ("set", "image", "scale"):
        assert page.locator(f".amms-{part} select").count() == 1, (part, shot)
    assert page.locator(".amms-table table").count() == 1, shot

    # another image (the smallest: each new one is reconstructed by every method)
    from amms_lib import data

    fig_src, fig0 = image_bytes(page, ".amms-figure")
    wipe_src, wipe0 = image_bytes(page, ".amms-wipe")
    set_name = page.locator(".amms-set select").input_value()
    current = page.locator(".amms-image select").input_value()
    others = [o for o in page.locator(".amms-image select option").all_inner_texts()
              if o != current]
    other = min(others, key=lambda n: data.load_pair(set_name, n, 4).hr.size)
    page.locator(".amms-image select").select_option(other)
    fig1 = changed(page, ".amms-figure", fig_src, f"image {other}")
    assert fig1 != fig0, "picking another image left the figure as it was"
    wipe_src, wipe1 = image_bytes(page, ".amms-wipe")
    assert wipe1 != wipe0
    assert other in page.locator(".amms-status").inner_text()

    # another scale
    fig_src, _ = image_bytes(page, ".amms-figure")
    scale = page.locator(".amms-scale select").input_value()
    page.locator(".amms-scale select").select_option("4" if scale != "4" else "3")
    fig2 = changed(page, ".amms-figure", fig_src, "another scale")
    assert fig2 != fig1, "picking another scale left the figure as it was"

    # the wipe seam, dragged with the mouse
    wipe_src, wipe2 = image_bytes(page, ".amms-wipe")
    col2 = seam_column(decode(wipe2))
    drag_seam(page, 0.2)
    wipe3 = changed(page, ".amms-wipe", wipe_src, "seam dragged")
    col3 = seam_column(decode(wipe3))
    assert col3 < col2, (col2, col3)

    # two methods, one either side: the seam at each end shows each one alone
    caption = page.locator(".amms-caption").inner_text()
    left = page.locator(".amms-left select").input_value()
    right = page.locator(".amms-right select").input_value()
    assert left != right and left in caption and right in caption, caption
    wipe_src, _ = image_bytes(page, ".amms-wipe")
    drag_seam(page, 1.2)  # past the end: all left
    only_left = decode(changed(page, ".amms-wipe", wipe_src, "seam at 100%"))
    wipe_src, _ = image_bytes(page, ".amms-wipe")
    drag_seam(page, -0.2)  # all right
    only_right = decode(changed(page, ".amms-wipe", wipe_src, "seam at 0%"))
    spliced = decode(wipe3)
    assert spliced.shape == only_left.shape == only_right.shape
    a, b = slice(2, col3 - 1), slice(col3 + 3, -2)  # clear of the markers
    assert (spliced[:, a] == only_left[:, a]).all()
    assert (spliced[:, b] == only_right[:, b]).all()
    assert (only_left[:, a] != only_right[:, a]).any()  # two different images
    assert (only_left[:, b] != only_right[:, b]).any()
    if "bicubic" in (left, right):  # the page's bicubic is the library's bicubic
        from amms_lib.images import as_rgb
        from amms_lib.resize import imresize

        scale = int(page.locator(".amms-scale select").input_value())
        pair = data.load_pair(set_name, other, scale)
        side = only_left if left == "bicubic" else only_right
        assert (side[:, 2:-2] == as_rgb(imresize(pair.lr, scale))[:, 2:-2]).all()

    # the curated screenshot: seam back near the middle
    wipe_src, _ = image_bytes(page, ".amms-wipe")
    drag_seam(page, 0.45)
    changed(page, ".amms-wipe", wipe_src, "seam dragged back")
    ui.screenshot(path=SHOTS / "08_explorer.png")
    if os.environ.get("AMMS_UPDATE_FIGURES") == "1":
        shutil.copy(SHOTS / "08_explorer.png", ROOT / "figures" / "08_explorer.png")

    # your own image: uploaded through the file picker, shown in the same panels, no PSNR
    mine = lab.work / "my_photo.png"
    rgb = np.random.default_rng(1).integers(0, 256, (36, 52, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(mine)
    fig_src, fig3 = image_bytes(page, ".amms-figure")
    with page.expect_file_chooser() as chooser:  # the widget's input is not in the page
        page.locator(".amms-upload").first.click()
    chooser.value.set_files(str(mine))
    fig4 = changed(page, ".amms-figure", fig_src, "image uploaded")
    assert fig4 != fig3
    status = page.locator(".amms-status").inner_text()
    assert "my_photo.png" in status and "no HR" in status, status
    assert page.locator(".amms-set select").input_value() == "your image"
    assert "no HR: no PSNR" in page.locator(".amms-table").inner_text()
    scale = int(page.locator(".amms-scale select").input_value())
    _, wipe_up = image_bytes(page, ".amms-wipe")
    assert decode(wipe_up).shape[:2] == (36 * scale, 52 * scale)  # the upload, upscaled
    ui.screenshot(path=SHOTS / "08_explorer_upload.png")


def test_rendered_course_shows_its_figures(page, tmp_path):
    """``make run``'s HTML course, as a learner opens it: the index links the notebook, whose
    page shows figures (images that decoded), drawn inline, not only saved to files."""
    env = {**os.environ, "AMMS_MODE": "quick", "TQDM_DISABLE": "1"}
    done = subprocess.run([sys.executable, "scripts/run_notebooks.py", "--only", "00",
                           "--figures", str(tmp_path / "figures")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "[1/1] 00_super_resolution.ipynb" in done.stdout  # announced before it ran
    executed = json.loads((ROOT / "runs" / "executed" / "00_super_resolution.ipynb").read_text())
    pngs = sum("image/png" in o.get("data", {}) for c in executed["cells"]
               for o in c.get("outputs", []))
    assert pngs >= 3, f"{pngs} inline figures in the executed notebook"
    page.goto((ROOT / "runs" / "course" / "index.html").as_uri())
    page.get_by_role("link", name="00 super resolution").click()
    page.wait_for_load_state()
    drawn = page.evaluate("[...document.images].filter(i => i.complete && i.naturalWidth > 100)"
                          ".length")
    page.screenshot(path=SHOTS / "course_00.png")
    assert drawn >= 3, f"{drawn} figures drawn in the course page"
