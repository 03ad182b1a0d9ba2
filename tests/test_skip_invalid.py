"""input.skip_invalid: broken scans are reported and left out; the study goes on with the rest."""

import pandas as pd
import yaml

from cesynth.demo import write_cohort
from conftest import REPO, nan_copy
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
