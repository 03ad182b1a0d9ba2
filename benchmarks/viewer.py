"""Offline slice viewer (cesynth.evaluate.viewer, issue #34): a report viewer page of one patient with two models,
its size and how long headless Chromium takes to open it from the file system until every pane has drawn, at the
demo's grid, the real study's and the paper's. Chromium draws WebGL on the CPU here (SwiftShader): a desktop browser
with a GPU opens the same page faster, so these are upper bounds."""

from __future__ import annotations

import sys
import time

import numpy as np
import pandas as pd

from benchmarks.common import REPO, make_scans, row

GRIDS = {"demo (48 x 64 x 48)": (48, 64, 48), "real study (96 x 96 x 64)": (64, 96, 96),
         "paper (192 x 256 x 192)": (192, 256, 192)}  # names (X x Y x Z); shapes (Z, Y, X)
MODELS = ("unet2d", "hrfcn3d")
OPENS = 3  # the first open of a fresh browser compiles NiiVue's shaders: the median of three after it


def page_of(root, shape) -> tuple:
    """(path, bytes, seconds to write) of one patient's report viewer on a ``shape`` grid."""
    from cesynth.evaluate import viewer
    from cesynth.io import Stack, save_nifti

    [stack_path], _ = make_scans(root, 1, shape, nifti=False)
    stack = Stack(stack_path)
    truth = stack.to_xyz(np.asarray(stack["ce_t1"]))
    models = {}
    for k, model in enumerate(MODELS):
        synth, spread = root / f"{model}_synth.nii.gz", root / f"{model}_uncertainty.nii.gz"
        save_nifti(truth * (0.85 + 0.1 * k), stack.affine, synth)
        save_nifti(np.abs(truth * (0.15 - 0.1 * k)), stack.affine, spread)
        models[model] = (synth, spread)
    metrics = pd.DataFrame([{"model": m, "scan": "P1", "set": "B", "psnr_brain": 20.0 + k}
                            for k, m in enumerate(["identity", *MODELS])])
    started = time.perf_counter()
    size = viewer.report_viewer(root / "P1.html", scan="P1", study="benchmark", stack_path=stack_path, models=models,
                                metrics=metrics, modalities=["t1", "t2", "adc"], reference="ce_t1")
    return root / "P1.html", size, time.perf_counter() - started


def bench(tmp, quick: bool) -> list:
    sys.path.insert(0, str(REPO / "tests"))  # the tests' headless Chromium driver
    from headless_chromium import CHROMIUM, Browser

    rows = []
    for name, shape in GRIDS.items():
        if quick and shape[0] > 100:
            continue
        path, size, written = page_of(tmp / f"viewer_{shape[0]}", shape)
        rows.append(row("viewer", f"report viewer page, {name}, 2 models", size / 2**20, "MB", note=(
            "8 volumes (3 inputs, the real CE-T1, 2 syntheses, absolute error, uncertainty) in 4 panes, 8-bit, "
            f"NiiVue inlined without its Zarr codecs; written in {written:.1f} s")))
        if CHROMIUM is None:
            rows.append(row("viewer", f"open in Chromium, {name}", float("nan"), "s", note="no chromium installed"))
            continue
        browser = Browser()
        seconds, first_pane = [], []
        try:
            for _ in range(OPENS + 1):
                browser.blank()  # a reader opens the page in a fresh tab, not over the last one
                seconds.append(browser.open(path, timeout=300))
                first_pane.append(browser.evaluate("cesynthViewer.firstPaneMs") / 1000)
        finally:
            browser.close()
        rows.append(row("viewer", f"open in headless Chromium until every pane drew, {name}",
                        float(np.median(seconds[1:])), "s", note=(
                            f"software WebGL (SwiftShader), median of {OPENS} after a first open of "
                            f"{seconds[0]:.1f} s; the first pane after {np.median(first_pane[1:]):.1f} s; "
                            "target < 2 s")))
    return rows
