"""config/real.yaml at reduced size: the baselines study end to end on four of its real patients (the raw TCGA
case registered and skull-stripped, BraTS-form cases kept as they are, a BraTS 2018 test patient with expert
labels scored in the brain, the tumour and the enhancing tumour under both protocols)."""

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
pytestmark = pytest.mark.skipif(not (DATA / "brats2018" / "Brats18_TCIA01_378_1").is_dir(),
                                reason="real cases of ../shared/data not available")
SCANS = {"TCGA-FG-6692": "train", "TCGA-DU-7294": "train", "Brats18_TCIA01_201_1": "train",
         "Brats18_TCIA01_378_1": "B"}
SMALL = {
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


def subset(tmp_path) -> dict:
    """config/real.yaml's sample sheet and split cut down to SCANS (paths made absolute: the test runs elsewhere)."""
    sheet = pd.read_csv(REPO / "config" / "real" / "samples.tsv", sep="\t", dtype=str, keep_default_na=False)
    sheet = sheet[sheet.scan.isin(SCANS)]
    for column in ("t1", "t2", "flair", "ce_t1", "tumour_mask"):
        sheet[column] = [str((REPO / "config" / "real" / p).resolve()) if p else "" for p in sheet[column]]
    sheet.to_csv(tmp_path / "samples.tsv", sep="\t", index=False)
    pd.DataFrame({"scan": list(SCANS), "set": list(SCANS.values())}).to_csv(tmp_path / "split.tsv", sep="\t",
                                                                            index=False)
    return {"input": {"samplesheet": str(tmp_path / "samples.tsv")}, "split": {"table": str(tmp_path / "split.tsv")}}


def test_real_study_runs_on_mixed_raw_and_preprocessed_scans(tmp_path):
    small = tmp_path / "small.yaml"
    small.write_text(yaml.safe_dump({**SMALL, **subset(tmp_path)}))
    work = tmp_path / "work"
    cmd = [*SNAKEMAKE, "baselines", "--directory", str(work), "--cores", "2",
           "--configfile", str(REPO / "config" / "real.yaml"), str(small)]
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert result.returncode == 0, result.stderr[-6000:]
    results = work / "results"

    split = pd.read_csv(results / "split.tsv", sep="\t").set_index("scan").set
    assert split.to_dict() == SCANS

    preproc = results / "preproc"
    for scan, t1c in (("TCGA-DU-7294", DATA / "tcga-du-7294" / "t1c.nii.gz"),
                      ("Brats18_TCIA01_378_1", DATA / "brats2018" / "Brats18_TCIA01_378_1" /
                       "Brats18_TCIA01_378_1_t1ce.nii.gz")):
        mask = nib.load(preproc / scan / f"{scan}_desc-brain_mask.nii.gz").get_fdata() > 0
        assert dice(mask, nib.load(t1c).get_fdata() != 0) >= 0.99
        assert json.loads((preproc / scan / f"{scan}_desc-brain_qc.json").read_text())["backend"] == "none"
        for mod in ("t1", "t2", "flair"):
            assert json.loads((preproc / scan / f"{scan}_from-{mod}_qc.json").read_text())["transform"] == "none"
    raw = "TCGA-FG-6692"  # the raw clinical case still goes through ANTs and the Python BET
    assert json.loads((preproc / raw / f"{raw}_desc-brain_qc.json").read_text())["backend"] == "python"
    for mod in ("t1", "t2", "flair"):
        qc = json.loads((preproc / raw / f"{raw}_from-{mod}_qc.json").read_text())
        assert qc["transform"] == "rigid" and qc["mutual_information_after"] > qc["mutual_information_before"]

    metrics = pd.read_csv(results / "studies" / "baselines" / "metrics.tsv", sep="\t")
    assert set(metrics.model) == {"identity", "unet2d", "hrfcn3d"} and set(metrics.scan) == {"Brats18_TCIA01_378_1"}
    assert (metrics.set == "B").all()
    scores = ["psnr_brain", "psnr_tumour", "brasyn_psnr_brain", "brasyn_ssim_tumour", "brasyn_ssim_healthy",
              "et_contrast", "et_contrast_truth", "et_dice_truth", "et_ml"]
    assert np.isfinite(metrics[scores]).all().all() and metrics.ssim_brain.between(-1, 1).all()
    truth = metrics.iloc[0]  # the real CE-T1 shows the enhancement its expert label marks (docs/real.md)
    assert truth.et_contrast_truth > 0.3 and truth.et_dice_truth > 0.5 and 20 < truth.et_ml < 60
    identity = metrics.set_index("model").loc["identity"]
    assert identity.et_dice == 0 and abs(identity.et_contrast) < 0.2  # the T1 has no enhancement
    summary = pd.read_csv(results / "studies" / "baselines" / "summary.tsv", sep="\t").set_index("model")
    versus = summary["set B psnr_brain vs identity"]
    assert pd.isna(versus["identity"]) and all(v.endswith((" dB", "NOT above identity")) for v in versus.dropna())
    stack = json.loads((preproc / "Brats18_TCIA01_378_1" / "Brats18_TCIA01_378_1_desc-preproc.json").read_text())
    assert stack["channels"][-2:] == ["tumour_mask", "et_mask"]
    history = pd.read_csv(results / "models" / "hrfcn3d" / "stage1" / "history.tsv", sep="\t")
    assert not any(c.startswith("val_") for c in history.columns)  # validation: none, the test patient unseen

    payload = torch.load(results / "models" / "hrfcn3d" / "stage2" / "weights.pt")
    assert payload["model_spec"]["inputs"] == ["t1", "t2", "flair"]
    assert payload["preprocessing"]["preprocess"]["shape"] == [48, 48, 32]
    assert payload["preprocessing"]["modalities"] == ["t1", "t2", "flair"]
