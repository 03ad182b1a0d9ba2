"""Section ``uncertainty``: what the uncertainty map costs beside one synthesis, for hrfcn3d at paper width on the
paper's 192x256x192 grid: its test-time-augmentation spread (``uncertainty.method: tta``) and the model-free terms
that ``combined`` adds (measured directly).

A view is one more sliding-window synthesis of the (changed) volume: a mirrored view costs one synthesis, a view
moved by N slices predicts the windows of N more slices, a view moved in plane predicts slices padded up to the
next multiple of the net's size divisor. Seconds per window are measured for the plain and the in-plane padded
slice (a few windows each, in a child process) and multiplied by each view's window count; training costs nothing
extra (the map uses the trained model as it is).
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks.common import INPUTS, PAPER_SHAPE_ZYX, PATCH, set_threads, row, run_child


def child_windows(pads: list[int], batch: int, repeats: int = 2, architecture: str = "hrfcn3d") -> dict:
    """Seconds per window of paper-width ``architecture`` on slices padded by each of ``pads`` voxels in Y and X;
    the shapes take turns and the fastest of ``repeats`` counts, so that other jobs on the machine slow both alike."""
    import torch

    from cesynth.infer.inference import sliding_window
    from cesynth.nets.models import build_model

    set_threads()
    torch.manual_seed(0)
    model = build_model(architecture, len(INPUTS), 1.0).eval()
    rng = np.random.default_rng(0)
    best = {pad: float("inf") for pad in pads}
    for _ in range(repeats):
        for pad in pads:
            shape = (len(INPUTS), PATCH[0] + batch - 1, PAPER_SHAPE_ZYX[1] + pad, PAPER_SHAPE_ZYX[2] + pad)
            volume = rng.random(shape, dtype=np.float32)
            t = time.perf_counter()
            sliding_window(model, volume, PATCH[0], 1, batch)
            best[pad] = min(best[pad], (time.perf_counter() - t) / batch)
    return {str(pad): seconds for pad, seconds in best.items()}


def model_free_seconds(repeats: int) -> float:
    """Seconds of the ``combined`` map's model-free terms (departure from the T1, texture) on the paper grid,
    fastest of ``repeats``."""
    from cesynth.infer.uncertainty import departure_and_texture

    rng = np.random.default_rng(0)
    synth, t1 = (rng.random(PAPER_SHAPE_ZYX, dtype=np.float32) for _ in range(2))
    brain = np.ones(PAPER_SHAPE_ZYX, bool)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        departure_and_texture(synth, t1, brain)
        best = min(best, time.perf_counter() - t)
    return best


def windows(n_z: int, stride: int, window: int = PATCH[0]) -> int:
    """Windows :func:`cesynth.infer.inference.sliding_window` predicts over ``n_z`` slices (the last one always)."""
    return len(range(0, n_z - window + 1, stride)) + ((n_z - window) % stride != 0)


def run(quick: bool) -> list[dict]:
    from cesynth.infer.inference import VIEWS
    from cesynth.nets.models import build_model

    batch = 2 if quick else 3
    divisor = build_model("hrfcn3d", len(INPUTS), 0.0625).size_divisor
    names = ["flip_x", "z1", "z2", "yx2"]  # config.yaml's views
    views = [VIEWS[n] for n in names]

    def pad(view):  # View.apply on the paper's slice (256 x 192, both multiples of the divisor)
        return view.shift[1] + -view.shift[1] % divisor

    measured = run_child("child_tta_windows", pads=sorted({0, *map(pad, views)}), batch=batch)[0]
    seconds = {int(p): s for p, s in measured.items()}
    n_z, rows = PAPER_SHAPE_ZYX[0], []
    for stride in (1, 3):  # config/paper.yaml's stride 1, config.yaml's 3
        one = windows(n_z, stride) * seconds[0]
        extra = sum(windows(n_z + view.shift[0], stride) * seconds[pad(view)] for view in views)
        rows.append(row("uncertainty", f"tta map, views {', '.join(names)}: hrfcn3d width 1, 192x256x192, "
                        f"stride {stride}, extra time beside the synthesis", extra / 60, "min", extra / one,
                        f"one synthesis (stride {stride})", f"extrapolated: seconds per window measured on {batch} "
                        f"windows, fastest of 2 ({seconds[0]:.2f} s plain, {seconds[max(seconds)]:.2f} s padded in plane)"))
    rows.append(row("uncertainty", "combined map: its model-free terms (departure from the T1, texture), 192x256x192",
                    model_free_seconds(2 if quick else 3), "s", None, "", "measured, fastest of the repeats; one "
                    "process, no child"))
    rows.append(row("uncertainty", "tta map: extra training", 0, "s", None, "", "none: the trained model as it is"))
    return rows
