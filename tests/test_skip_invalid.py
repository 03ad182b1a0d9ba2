"""input.skip_invalid: broken scans are reported and left out; the study goes on with the rest."""

import numpy as np
import pandas as pd
import yaml

from cesynth.inputs.demo import write_cohort
from conftest import REPO, nan_copy
from test_sources import bids_cfg, write_bids_tree
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
    assert not (work / "results").exists(), "a dry run must not write"

    # The first jobs report the scans left out, then check the valid scans only and pass.
    snakemake(work, "--configfile", str(REPO / "config" / "tiny.yaml"), str(config), "--cores", "1",
              "results/qc/inputs_validated.tsv")
    report = pd.read_csv(work / "results" / "qc" / "skipped_scans.tsv", sep="\t")
    assert set(report.scan) == bad and len(report) == 2
    validated = pd.read_csv(work / "results" / "qc" / "inputs_validated.tsv", sep="\t")
    assert set(validated.scan) == good

    # Without the switch the same sheet still stops before any work.
    config.write_text(yaml.safe_dump({"input": {"source": "samplesheet", "samplesheet": str(tmp_path / "broken.tsv")}}))
    result = snakemake(work, "-n", "--configfile", str(REPO / "config" / "tiny.yaml"), str(config), check=False)
    assert result.returncode != 0 and "t2 file does not exist" in result.stdout + result.stderr


def test_bids_dataset_with_broken_scans_runs_the_whole_dag_on_the_valid_scans(tmp_path):
    """Two things in one full run (one run keeps the suite fast): a BIDS dataset goes through the
    whole DAG (`all`: preprocessing, QC, both training stages, inference, metrics, t-tests, figures,
    runtimes), and with skip_invalid its two broken scans are reported and left out while every
    valid scan completes the study."""
    demo = write_cohort(yaml.safe_load((REPO / "config" / "tiny.yaml").read_text())["demo"], tmp_path / "demo",
                        tmp_path / "demo" / "samples.tsv")
    root = write_bids_tree(demo, tmp_path / "bids")
    set_a = demo[demo.tumour_mask == ""]  # set B keeps its only scan
    followup = set_a[set_a.patient.duplicated()].iloc[0]  # its patient stays, with the other session
    alone = set_a[~set_a.patient.duplicated(keep=False)].iloc[-1]  # its patient leaves the study

    def bids_id(row):  # as write_bids_tree names it
        return f"sub-{row.patient}_ses-{row.scan[len(row.patient):]}"

    def anat_file(row, suffix):
        return root / f"sub-{row.patient}" / f"ses-{row.scan[len(row.patient):]}" / "anat" / f"{bids_id(row)}_{suffix}"

    missing_id, nan_id = bids_id(followup), bids_id(alone)
    anat_file(followup, "T2w.nii.gz").unlink()
    anat_file(alone, "ADC.nii.gz").unlink()
    nan_copy(alone.adc, anat_file(alone, "ADC.nii.gz"))
    config = tmp_path / "bids.yaml"
    config.write_text(yaml.safe_dump({"input": {"source": "bids", "bids": bids_cfg(root), "skip_invalid": True}}))
    work = tmp_path / "work"

    snakemake(work, "--cores", "2", configs=[REPO / "config" / "tiny_fast.yaml", config])

    results = work / "results"
    skipped = pd.read_csv(results / "qc" / "skipped_scans.tsv", sep="\t").set_index("scan")
    assert sorted(skipped.index) == sorted([missing_id, nan_id])
    assert "t2 file does not exist" in skipped.problem[missing_id] and "NaN" in skipped.problem[nan_id]
    valid = {bids_id(row) for row in demo.itertuples()} - {missing_id, nan_id}
    split = pd.read_csv(results / "split.tsv", sep="\t")
    assert set(split.scan) == valid and {"train", "test_A", "B"} == set(split.set)
    # no file or folder of the broken scans anywhere under results/
    leftovers = [p for p in results.rglob("*") if missing_id in p.name or nan_id in p.name]
    assert not leftovers, leftovers
    assert set(pd.read_csv(results / "qc" / "preproc_qc.tsv", sep="\t").scan) == valid

    test_scans = set(split.scan[split.set != "train"])
    for study in ("baselines", "ablation_inputs", "ablation_local_loss"):  # as pointed by tiny_fast.yaml
        metrics = pd.read_csv(results / "studies" / study / "metrics.tsv", sep="\t")
        for model in ("unet2d", "hrfcn3d"):
            assert sorted(metrics.scan[metrics.model == model]) == sorted(test_scans), (study, model)
        assert np.isfinite(metrics.psnr_brain).all() and metrics.ssim_brain.between(-1, 1).all()
        assert np.isfinite(metrics.psnr_tumour[metrics.set == "B"]).all()
        ttests = pd.read_csv(results / "studies" / study / "ttests.tsv", sep="\t")
        assert set(zip(ttests.model_a, ttests.model_b)) == {("identity", "unet2d"), ("identity", "hrfcn3d"),
                                                            ("unet2d", "hrfcn3d")}
        assert set(ttests.set) == {"test_A", "B"}
    for scan in valid:  # the per-scan QC panels of the report, under the BIDS ids
        assert (results / "qc" / "preproc" / f"{scan}_qc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    runtimes = pd.read_csv(results / "studies" / "resources" / "runtimes.tsv", sep="\t")
    assert set(runtimes.job[runtimes.rule == "skullstrip"]) == valid and (runtimes.s > 0).all()
    assert str(root) in (results / "studies" / "provenance" / "provenance.html").read_text()  # the BIDS config
