"""input.skip_invalid: broken scans are reported and left out; the study goes on with the rest."""

import numpy as np
import pandas as pd
import yaml

from cesynth.demo import write_cohort
from conftest import REPO, nan_copy
from test_bids import bids_cfg, write_bids_tree
from test_workflow import snakemake


def test_broken_scans_are_reported_and_left_out(tmp_path):
    demo = write_cohort(yaml.safe_load((REPO / "config" / "tiny.yaml").read_text())["demo"], tmp_path / "demo",
                        tmp_path / "demo" / "samples.tsv")
    broken = demo.copy()
    broken.loc[0, "t2"] = str(tmp_path / "missing_t2.nii.gz")
    broken.loc[1, "adc"] = nan_copy(demo.adc[1], tmp_path / "nan_adc.nii.gz")
    broken.to_csv(tmp_path / "broken.tsv", sep="\t", index=False)
    bad, good = set(demo.scan[:2]), set(demo.scan[2:])
    config = tmp_path / "skip.yaml"
    config.write_text(yaml.safe_dump({"input": {"source": "samplesheet", "samplesheet": str(tmp_path / "broken.tsv"),
                                                "skip_invalid": True}}))
    work = tmp_path / "work"

    result = snakemake(work, "-n", "--configfile", str(REPO / "config" / "tiny.yaml"), str(config))
    out = result.stdout + result.stderr
    assert f"skip_invalid: leaving out scan {demo.scan[0]} ({tmp_path / 'missing_t2.nii.gz'}): t2 file does not " \
           "exist" in out
    assert f"scan {demo.scan[1]} ({tmp_path / 'nan_adc.nii.gz'}): adc: 1 voxel(s) are NaN" in out
    assert all(f"preproc/{s}/" in out for s in good) and not any(f"preproc/{s}/" in out for s in bad)
    report = pd.read_csv(work / "results" / "qc" / "skipped_scans.tsv", sep="\t")
    assert set(report.scan) == bad and len(report) == 2

    # The first job runs on the valid scans only and passes.
    snakemake(work, "--configfile", str(REPO / "config" / "tiny.yaml"), str(config), "--cores", "1",
              "results/qc/inputs_validated.tsv")
    validated = pd.read_csv(work / "results" / "qc" / "inputs_validated.tsv", sep="\t")
    assert set(validated.scan) == good

    # Without the switch the same sheet still stops before any work.
    config.write_text(yaml.safe_dump({"input": {"source": "samplesheet", "samplesheet": str(tmp_path / "broken.tsv")}}))
    result = snakemake(work, "-n", "--configfile", str(REPO / "config" / "tiny.yaml"), str(config), check=False)
    assert result.returncode != 0 and "t2 file does not exist" in result.stdout + result.stderr


def test_bids_dataset_with_a_broken_scan_completes_a_study_on_the_valid_scans(tmp_path):
    """A BIDS dataset runs through the whole DAG (here the `baselines` study: preprocessing, both
    training stages, inference, metrics, t-tests, figures), and with skip_invalid a scan with a
    broken file is left out while every valid scan completes."""
    demo = write_cohort(yaml.safe_load((REPO / "config" / "tiny.yaml").read_text())["demo"], tmp_path / "demo",
                        tmp_path / "demo" / "samples.tsv")
    root = write_bids_tree(demo, tmp_path / "bids")
    broken = demo[demo.tumour_mask == ""].iloc[-1]  # a set-A scan, so set B keeps its only scan
    sub, ses = broken.patient, broken.scan[len(broken.patient):]
    adc = root / f"sub-{sub}" / f"ses-{ses}" / "anat" / f"sub-{sub}_ses-{ses}_ADC.nii.gz"
    adc.unlink()
    nan_copy(broken.adc, adc)
    broken_id = f"sub-{sub}_ses-{ses}"
    config = tmp_path / "bids.yaml"
    config.write_text(yaml.safe_dump({"input": {"source": "bids", "bids": bids_cfg(root), "skip_invalid": True}}))
    work = tmp_path / "work"

    snakemake(work, "--cores", "2", "baselines", configs=[config])

    results = work / "results"
    skipped = pd.read_csv(results / "qc" / "skipped_scans.tsv", sep="\t")
    assert list(skipped.scan) == [broken_id] and "NaN" in skipped.problem[0]
    split = pd.read_csv(results / "split.tsv", sep="\t")
    expected = {f"sub-{p}_ses-{s[len(p):]}" for p, s in zip(demo.patient, demo.scan)} - {broken_id}
    assert set(split.scan) == expected
    assert not (results / "preproc" / broken_id).exists()
    metrics = pd.read_csv(results / "studies" / "baselines" / "metrics.tsv", sep="\t")
    test_scans = set(split.scan[split.set != "train"])
    for model in ("unet2d", "hrfcn3d"):  # config/tiny.yaml's baselines
        assert set(metrics.scan[metrics.model == model]) == test_scans
    assert np.isfinite(metrics.psnr_brain).all()
    assert np.isfinite(metrics.psnr_tumour[metrics.set == "B"]).all()
    ttests = pd.read_csv(results / "studies" / "baselines" / "ttests.tsv", sep="\t")
    assert set(zip(ttests.model_a, ttests.model_b)) == {("unet2d", "hrfcn3d")}
