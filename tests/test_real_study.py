"""config/real.yaml at reduced size: the baselines study end to end on the three real patients of
../shared/data (the raw TCGA case registered and skull-stripped, the two BraTS-form cases kept as they are)."""

import json
import os
import subprocess

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import REPO, SHARED
from test_workflow import SNAKEMAKE

DATA = SHARED / "data"
pytestmark = pytest.mark.skipif(not (DATA / "brats-gli-00001-000" / "t1c.nii.gz").is_file(),
                                reason="real cases of ../shared/data not available")
SMALL = {
    "input": {"samplesheet": str(REPO / "config" / "real" / "samples.tsv")},  # absolute: the test runs elsewhere
    "split": {"table": str(REPO / "config" / "real" / "split.tsv")},
    "preprocess": {"shape": [48, 48, 32]},
    # coarser registration and BET of the raw case: the test checks that they run, docs/real.md how well
    "registration": {"iterations": [100, 50, 20, 0], "finest_mm": 4.0},
    "skullstrip": {"iso_mm": 3.0, "iterations": 300},
    "training": {"device": "cpu", "width": 0.0625, "batch_size": 2, "patch": [3, 32, 32], "steps_per_epoch": 3,
                 "stage1": {"epochs": 1}, "stage2": {"epochs": 1}},
    "studies": {"baselines": ["unet2d", "hrfcn3d"]},
}


def dice(a, b):
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def test_real_study_runs_on_mixed_raw_and_preprocessed_scans(tmp_path):
    small = tmp_path / "small.yaml"
    small.write_text(yaml.safe_dump(SMALL))
    work = tmp_path / "work"
    cmd = [*SNAKEMAKE, "baselines", "--directory", str(work), "--cores", "2",
           "--configfile", str(REPO / "config" / "real.yaml"), str(small)]
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert result.returncode == 0, result.stderr[-6000:]
    results = work / "results"

    split = pd.read_csv(results / "split.tsv", sep="\t").set_index("scan").set
    assert split.to_dict() == {"TCGA-FG-6692": "train", "TCGA-DU-7294": "train", "BraTS-GLI-00001-000": "test_A"}

    preproc = results / "preproc"
    for scan, folder in (("TCGA-DU-7294", "tcga-du-7294"), ("BraTS-GLI-00001-000", "brats-gli-00001-000")):
        mask = nib.load(preproc / scan / f"{scan}_desc-brain_mask.nii.gz").get_fdata() > 0
        assert dice(mask, nib.load(DATA / folder / "t1c.nii.gz").get_fdata() != 0) >= 0.99
        assert json.loads((preproc / scan / f"{scan}_desc-brain_qc.json").read_text())["backend"] == "none"
        for mod in ("t1", "t2", "flair"):
            assert json.loads((preproc / scan / f"{scan}_from-{mod}_qc.json").read_text())["transform"] == "none"
    raw = "TCGA-FG-6692"  # the raw clinical case still goes through ANTs and the Python BET
    assert json.loads((preproc / raw / f"{raw}_desc-brain_qc.json").read_text())["backend"] == "python"
    for mod in ("t1", "t2", "flair"):
        qc = json.loads((preproc / raw / f"{raw}_from-{mod}_qc.json").read_text())
        assert qc["transform"] == "rigid" and qc["mutual_information_after"] > qc["mutual_information_before"]

    metrics = pd.read_csv(results / "studies" / "baselines" / "metrics.tsv", sep="\t")
    assert set(metrics.model) == {"identity", "unet2d", "hrfcn3d"} and set(metrics.scan) == {"BraTS-GLI-00001-000"}
    assert np.isfinite(metrics.psnr_brain).all() and metrics.ssim_brain.between(-1, 1).all()
    assert metrics.psnr_tumour.isna().all()  # no tumour masks, no set B

    payload = torch.load(results / "models" / "hrfcn3d" / "stage2" / "weights.pt", weights_only=False)
    assert payload["model_spec"]["inputs"] == ["t1", "t2", "flair"]
    assert payload["preprocessing"]["preprocess"]["shape"] == [48, 48, 32]
    assert payload["preprocessing"]["modalities"] == ["t1", "t2", "flair"]
