"""Seconds per preprocessing step, and registration against antspyx's default rigid registration.

For one demo scan (1 mm voxels, model grid 192x256x192 as in the paper) and the TCGA glioma case:
registration of every input onto the reference (cesynth defaults, the earlier full-resolution
schedule, and ``ants.registration(fixed, moving, "Rigid")``), skull stripping, and
resample + equalize (:func:`cesynth.preprocess.preprocessing.preprocess_scan`). Registration accuracy is the
mean displacement (mm, over brain voxels) after recovering a known 10 deg / 8 mm rigid motion of a
T2-like copy of the demo reference (the demo inputs are misaligned by design, by amounts the
benchmark does not know, as are the TCGA inputs: for those MI before/after is reported).

    python -m benchmarks.preprocessing [repeats]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "2")

import ants  # noqa: E402
import numpy as np  # noqa: E402

from cesynth.inputs.demo import write_cohort  # noqa: E402
from cesynth.preprocess.preprocessing import preprocess_scan  # noqa: E402
from cesynth.preprocess.registration import (RegistrationSettings, mutual_information,  # noqa: E402
                                             register_to_reference)
from cesynth.preprocess.skullstrip import SkullStripSettings, brain_mask  # noqa: E402

TCGA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tcga-fg-6692"  # the sibling shared/ folder
PAPER_SHAPE = (192, 256, 192)
METHODS = {
    "cesynth": {},
    "cesynth, earlier schedule": {"iterations": (500, 250, 100, 20), "finest_mm": 0.0},
}


def _rigid(img, degrees=10.0, mm=8.0):
    a = np.deg2rad(degrees)
    rot = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    centre = np.asarray(img.origin) + np.asarray(img.direction) @ (np.asarray(img.spacing) * (np.array(img.shape) - 1) / 2)
    return ants.create_ants_transform(transform_type="AffineTransform", dimension=3, matrix=rot,
                                      translation=(mm, -mm / 2, mm / 2), center=centre)


def _error(true, est_paths, brain):
    """Mean |true(est(x)) - x| over (a subsample of) brain voxel centres, in mm."""
    est = [ants.read_transform(p) for p in est_paths]
    idx = np.argwhere(brain.numpy() > 0)[::50]
    errs = []
    for i in idx:
        x = ants.transform_index_to_physical_point(brain, tuple(int(v) for v in i))
        y = x
        for t in reversed(est):  # ANTs applies the transform list last-first
            y = t.apply_to_point(y)
        errs.append(np.linalg.norm(np.asarray(true.apply_to_point(y)) - np.asarray(x)))
    return float(np.mean(errs))


def _register_all(case, ref, moving: dict, work: Path, brain=None, true=None):
    """Register every input with each method; outputs land in ``work/<mod>.nii.gz`` (last method's)."""
    rows = []
    fixed = ants.image_read(str(ref)).clone("float")
    for mod, path in moving.items():
        for method, kw in METHODS.items():
            t0 = time.perf_counter()
            res = register_to_reference(path, ref, work / f"{mod}.nii.gz", work / f"{mod}.mat",
                                        RegistrationSettings(**kw))
            row = dict(case=case, step=f"register {mod}", method=method, seconds=time.perf_counter() - t0,
                       mi_before=res["mutual_information_before"], mi_after=res["mutual_information_after"])
            if true is not None:
                row["error_mm"] = _error(true, [str(work / f"{mod}.mat")], brain)
            rows.append(row)
            print(row, flush=True)
        mov = ants.image_read(str(path)).clone("float")
        t0 = time.perf_counter()
        out = ants.registration(fixed, mov, "Rigid")
        row = dict(case=case, step=f"register {mod}", method="ants.registration Rigid",
                   seconds=time.perf_counter() - t0, mi_before=rows[-1]["mi_before"],
                   mi_after=mutual_information(fixed, out["warpedmovout"]))
        if true is not None:
            row["error_mm"] = _error(true, out["fwdtransforms"], brain)
        rows.append(row)
        print(row, flush=True)
    return rows


def _strip_and_resample(case, ref, registered: dict, work: Path):
    t0 = time.perf_counter()
    brain_mask(ref, work / "mask.nii.gz", SkullStripSettings(backend="python"))
    rows = [dict(case=case, step="skull strip", method="python BET + refinement", seconds=time.perf_counter() - t0)]
    t0 = time.perf_counter()
    preprocess_scan(ref, registered, work / "mask.nii.gz",
                    {"shape": PAPER_SHAPE, "equalization": "histogram", "enhancement_delta": 0.1})
    rows.append(dict(case=case, step="resample + equalize", method=f"{PAPER_SHAPE}", seconds=time.perf_counter() - t0))
    return rows


def _demo(work: Path):
    cfg = dict(seed=1, patients=1, followups=0, expert_masks=0, tumour_fraction=1.0, voxel_mm=1.0,
               head_scale=1.0, noise=0.02)
    table = write_cohort(cfg, work / "demo", work / "demo" / "samples.tsv")
    row = table.iloc[0]
    ref = Path(row["ce_t1"])
    mods = [c for c in table.columns if c not in ("patient", "scan", "ce_t1", "tumour_mask", "has_tumour")]
    ref_img = ants.image_read(str(ref)).clone("float")
    # The demo inputs are misaligned on purpose by unknown amounts; for a known answer move a
    # T2-like copy of the reference itself (monotone decreasing intensity map: a different contrast).
    true = _rigid(ref_img)
    a = ref_img.numpy()
    head = a > 0.1 * np.percentile(a, 99)
    t2_like = ref_img.new_image_like(np.where(head, (1 - np.clip(a / np.percentile(a[head], 99), 0, 1)) ** 2 * 1000 + 50,
                                              0).astype(np.float32))
    known = work / "known_motion.nii.gz"
    ants.image_write(ants.apply_ants_transform_to_image(true, t2_like, t2_like, interpolation="linear"), str(known))
    brain = ref_img.new_image_like((a > np.percentile(a, 60)).astype(np.float32))
    rows = _register_all("demo 1 mm", ref, {"known-motion T2-like": known}, work, brain, true)
    rows += _register_all("demo 1 mm", ref, {m: row[m] for m in mods}, work)
    # The inputs have their own grids (thick-slice t2): resample+equalize takes the registered copies.
    return rows + _strip_and_resample("demo 1 mm", ref, {m: str(work / f"{m}.nii.gz") for m in mods}, work)


def _tcga(work: Path):
    moving = {m: TCGA / f"{m}.nii.gz" for m in ("t1", "t2", "flair")}
    rows = _register_all("TCGA-FG-6692", TCGA / "t1c.nii.gz", moving, work)
    registered = {}
    for m, p in moving.items():
        register_to_reference(p, TCGA / "t1c.nii.gz", work / f"reg_{m}.nii.gz", work / f"reg_{m}.mat")
        registered[m] = str(work / f"reg_{m}.nii.gz")
    return rows + _strip_and_resample("TCGA-FG-6692", TCGA / "t1c.nii.gz", registered, work)


def run(repeats=1) -> list[dict]:
    """All rows (case, step, method, seconds, and for registration MI and error_mm), ``repeats`` times."""
    rows = []
    for r in range(int(repeats)):
        with tempfile.TemporaryDirectory(prefix="cesynth_bench_") as tmp:
            rows += [dict(repeat=r, **x) for x in _demo(Path(tmp))]
            if (TCGA / "t1c.nii.gz").is_file():
                rows += [dict(repeat=r, **x) for x in _tcga(Path(tmp))]
    return rows


def main():
    import pandas as pd

    table = pd.DataFrame(run(int(sys.argv[1]) if len(sys.argv) > 1 else 1))
    summary = table.groupby(["case", "step", "method"], sort=False).mean(numeric_only=True).drop(columns="repeat")
    print(summary.round(3).to_string())


if __name__ == "__main__":
    main()
