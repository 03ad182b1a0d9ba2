"""What the benchmark sections share: the repository, the paper's shapes, a result row, a child process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PAPER_SHAPE_ZYX = (192, 256, 192)
PATCH = (3, 256, 192)
BATCH = 3
INPUTS = ["t1", "t2", "adc"]


def snakemake_executable() -> str:
    """The snakemake of this Python's environment (the venv the benchmarks run in), else the one on PATH."""
    return shutil.which("snakemake", path=str(Path(sys.executable).parent)) or "snakemake"


def row(section, case, value, unit, ratio=None, baseline="", note=""):
    return {"section": section, "case": case, "value": value, "unit": unit, "ratio": ratio,
            "baseline": baseline, "note": note}


def run_child(function: str, threads: int = 2, timeout: float | None = None, crash_ok=False, **kwargs):
    """(result, peak RSS in GB, seconds) of ``CHILDREN[function](**kwargs)`` in a fresh process;
    (None, None, timeout) if it runs longer than ``timeout`` seconds; ({"exit": code}, None, seconds)
    if it fails and ``crash_ok``."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "CESYNTH_BENCH_THREADS": str(threads)}
    started = time.time()
    try:
        proc = subprocess.run([sys.executable, "-m", "benchmarks", "--child", function, json.dumps(kwargs)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL if crash_ok else None, text=True,
                              env=env, cwd=REPO, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, None, timeout
    if proc.returncode and crash_ok:
        return {"exit": proc.returncode}, None, time.time() - started
    if proc.returncode:
        raise RuntimeError(f"benchmark child {function} {kwargs} failed (exit {proc.returncode})")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    return report["result"], report["peak_gb"], time.time() - started


def set_threads():
    """torch threads of a benchmark child: CESYNTH_BENCH_THREADS (run_child sets it)."""
    import torch

    torch.set_num_threads(int(os.environ.get("CESYNTH_BENCH_THREADS", "2")))


def make_scans(root: Path, n: int, shape=PAPER_SHAPE_ZYX, nifti=True):
    """n paper-size scans as preprocessed stacks (.npy + .json) and, if asked, as .nii.gz per modality."""
    from cesynth.io import save_nifti, save_stack

    root.mkdir(parents=True, exist_ok=True)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, s, dtype=np.float32) for s in shape], indexing="ij", sparse=True)
    brain = (x**2 + y**2 + z**2) < 0.7
    stacks, niftis = [], []
    for i in range(n):
        rng = np.random.default_rng(i)
        t1 = (0.5 + 0.2 * np.sin(6 * x + i) * np.cos(5 * y) + 0.03 * rng.standard_normal(shape, np.float32)) * brain
        channels = {"t1": t1, "t2": (0.6 - 0.3 * np.cos(4 * y - i) * z) * brain, "adc": (0.4 + 0.2 * x * y) * brain}
        channels["ce_t1"] = np.clip(t1 + 0.3 * ((x - 0.2) ** 2 + y**2 + z**2 < 0.05), 0, 1) * brain
        channels["brain_mask"] = brain * np.ones(shape, np.float32)
        channels["enhancement_mask"] = (channels["ce_t1"] - t1 > 0.1).astype(np.float32)
        npy = root / f"S{i:03d}_desc-preproc.npy"
        save_stack(np.stack([np.broadcast_to(c, shape) for c in channels.values()]), list(channels), np.eye(4),
                   npy, npy.with_suffix(".json"))
        stacks.append(npy)
        if nifti:
            files = {}
            for name in [*INPUTS, "ce_t1", "enhancement_mask"]:
                files[name] = root / f"S{i:03d}_{name}.nii.gz"
                save_nifti(np.transpose(np.broadcast_to(channels[name], shape), (2, 1, 0)), np.eye(4), files[name])
            niftis.append(files)
    return stacks, niftis
