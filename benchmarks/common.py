"""What the benchmark sections share: the repository, the paper's shapes, a result row, a child process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

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
