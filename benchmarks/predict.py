"""One new patient end to end on the CPU: ``snakemake predict --cores 2`` on TCGA-FG-6692 at the paper's grid.

The real raw clinical case (T1, T2, FLAIR on their own 5.5 mm grids, skull on) goes through every predict
job: validation, two registrations, skull strip, resize to 192 x 256 x 192 with histogram equalization,
hrfcn3d at width 1 on the fast CPU path (``inference.cpu_bf16``: bf16, channels-last, batch norm folded),
resampling to the native T1 grid, sidecar and panel; without the uncertainty map (``predict.uncertainty: false``,
each of its views is one more synthesis: section uncertainty). The weights are untrained (a CPU cannot train the
paper's model; the time of a forward pass does not depend on the weights' values), written with the
run's preprocessing record and a model card that says so.
"""

from __future__ import annotations

import os
import resource
import subprocess
import time
from pathlib import Path

import pandas as pd
import yaml

from benchmarks.common import REPO, snakemake_executable

CASE = REPO.parent / "shared" / "data" / "tcga-fg-6692"
MODALITIES = ("t1", "t2", "flair")
# The CPU path: bf16 on AMX, and config.yaml's non-overlapping windows (stride 3, the reference code's tiling)
# instead of config/paper.yaml's stride 1, which averages three windows per slice at three times the cost.
# paper.yaml names no cohort; predicting with given weights trains nothing, so the phantom's stands in.
OVERRIDES = {"input": {"source": "demo"}, "modalities": list(MODALITIES), "inference": {"cpu_bf16": True, "stride": 3},
             "training": {"threads": 2}}


def run_config() -> dict:
    """config.yaml, then config/paper.yaml, then OVERRIDES: what the predict run merges."""
    from snakemake.utils import update_config

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    for extra in (yaml.safe_load((REPO / "config" / "paper.yaml").read_text()), OVERRIDES):
        update_config(config, extra)
    return config


def untrained_weights(path: Path, config: dict) -> Path:
    """hrfcn3d weights at initialisation with the run's preprocessing record, and a model card saying what they are."""
    import torch

    from cesynth.evaluate.modelcard import INTENDED_USE
    from cesynth.io import sha256, write_json
    from cesynth.nets.weights import new_model, save_weights
    from cesynth.pipeline import plans

    torch.manual_seed(0)
    spec = plans.model_spec(config, "hrfcn3d")
    settings = plans.model_settings(config, "hrfcn3d")
    save_weights(new_model(spec).eval(), spec, [], path, target=settings["target"], patch=settings["patch"],
                 preprocessing=settings["preprocessing"])
    cohort = {"sets": {"train": {"patients": 0, "scans": 0}}, "sample_sheet_sha256": "none (untrained: timing only)"}
    write_json({"model": "hrfcn3d", "architecture": spec["architecture"], "inputs": spec["inputs"],
                "weights": {"file": path.name, "sha256": sha256(path)}, "training": {"cohort": cohort},
                "test_metrics": {}, "intended_use": "benchmark timing only; " + INTENDED_USE},
               path.with_name("model_card.json"))
    return path


def run(work: Path) -> dict:
    """Wall time, peak RSS of the largest process, the 1-min load average before and after, and per predict job
    its wall and CPU seconds (CPU seconds tell what other processes on the machine took from a slow run)."""
    config = run_config()
    weights = untrained_weights(work / "site" / "weights.pt", config)
    sheet = work / "patient.tsv"
    sheet.write_text("patient\tscan\tt1\tt2\tflair\n"
                     + "\t".join(["TCGA-FG-6692", "FG6692", *(str(CASE / f"{m}.nii.gz") for m in MODALITIES)])
                     + "\n")
    own = work / "predict.yaml"
    own.write_text(yaml.safe_dump({**OVERRIDES, "predict": {"samplesheet": str(sheet), "model": "hrfcn3d",
                                                            "weights": str(weights), "uncertainty": False}}))
    snakemake = snakemake_executable()
    command = [snakemake, "-s", str(REPO / "Snakefile"), "--directory", str(work), "predict", "--cores", "2",
               "--configfile", str(REPO / "config" / "paper.yaml"), str(own)]
    load_before, started = os.getloadavg()[0], time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"snakemake predict failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # kB: the largest single process
    jobs = {f"{p.parent.name} {p.stem}": pd.read_csv(p, sep="\t")[["s", "cpu_time"]].iloc[-1].to_dict()
            for p in sorted((work / "results" / "benchmarks").glob("*/*.tsv"))}
    return {"wall_s": wall, "peak_gb": peak_gb, "load": [load_before, os.getloadavg()[0]], "jobs": jobs}


def main():
    """Print :func:`run`'s result as JSON (its own process: the peak RSS counts only this run's processes)."""
    import json
    import tempfile

    with tempfile.TemporaryDirectory(prefix="cesynth-predict-") as tmp:
        print(json.dumps(run(Path(tmp))))


if __name__ == "__main__":
    main()
