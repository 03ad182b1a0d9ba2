"""Every command printed in README.md and docs/*.md, run exactly as printed, in a fresh clone.

The study is the test-size one: CESYNTH_CONFIGFILE names config/tiny.yaml, config/tiny_fast.yaml and
a three-patient cohort (docs_commands.tiny_configfile); the Snakefile merges them after the command's
own --configfile files (so `--configfile config/paper.yaml` stays on the command line). Files a user writes are
made here: `my_cohort.yaml` as the README prints it and the `cohort.tsv` it names (the demo cohort's own scans),
`my_predict.yaml` and `new_patients.tsv` exactly as docs/predict.md prints them, with a demo scan (without its CE-T1) where that sheet points,
`my_dicom_predict.yaml`, `dicom_patients.tsv` and `NEW002/dicom/<t1,t2,adc>/` (another demo scan as DICOM series).

Where the commands run:
- here (marker slow, run by scripts/test.sh after the default suite): every command but the two below, in
  the order printed, in one clone. The
  clone's `.venv` is this test's own virtual environment (requirements installed, the package taken
  from the clone through PYTHONPATH), so the README's `.venv/bin/snakemake` line runs as printed;
- test_install_commands (marker slow: it downloads and installs the requirements): the README's
  install line in a clone of its own, then `bash scripts/test.sh` with PYTEST_ADDOPTS=--collect-only
  (it would otherwise run this suite inside itself);
- tests/test_slurm.py: the cluster command (`--profile profiles/slurm`), on a local SLURM cluster;
- tests/test_shipped_model.py: predict with the model that ships (`config/real.yaml`), on a real patient (the
  test-size configuration would not match the shipped weights).
"""

import io
import os
import re
import shutil
import sys
from pathlib import Path

import nibabel as nib
import pandas as pd
import pytest
import yaml

from cesynth.inputs.cohort import load_samples
from conftest import REPO, SHARED
from dicom_series import patient_series
from docs_commands import (SLURM_PROFILE, documented_commands, fresh_clone, printed_file, run_command,
                           tiny_configfile, user_env)

COMMANDS = documented_commands()
INSTALL = [c for c in COMMANDS if "pip install" in c[1] or "scripts/test.sh" in c[1]]
ON_SLURM = [c for c in COMMANDS if SLURM_PROFILE in c[1]]
SHIPPED = [c for c in COMMANDS if c[1].startswith("snakemake predict") and "config/real.yaml" in c[1]]
HERE = [c for c in COMMANDS if c not in INSTALL and c not in ON_SLURM and c not in SHIPPED]
TIMEOUT_S = 1200
STUDIES = ("baselines", "ablation_inputs", "ablation_local_loss")


def test_every_documented_command_is_run_by_a_test():
    print(f"\n{len(COMMANDS)} documented commands: {len(HERE)} run by test_documented_commands, "
          f"{len(INSTALL)} by test_install_commands (slow), {len(ON_SLURM)} by tests/test_slurm.py, "
          f"{len(SHIPPED)} by tests/test_shipped_model.py")
    assert len(COMMANDS) >= 8 and len(INSTALL) == 2 and len(ON_SLURM) >= 1 and len(SHIPPED) >= 1
    from test_slurm import README_SLURM_COMMANDS
    assert sorted({c for _, c in ON_SLURM}) == README_SLURM_COMMANDS
    shipped_test = (REPO / "tests" / "test_shipped_model.py").read_text()
    for name, command in SHIPPED:
        assert f'"{command.split("#")[0].strip()}"' in shipped_test, (name, command)


def test_targets_come_before_options():
    """`--configfile a.yaml target` would read the target as a config file."""
    for name, command in COMMANDS:
        for part in command.split("&&"):
            words = part.split("#")[0].split()
            if "--configfile" in words:
                after = words[words.index("--configfile") + 1:]
                files = after[:next((i for i, w in enumerate(after) if w.startswith("-")), len(after))]
                assert all(f.endswith((".yaml", ".yml", ".json")) for f in files), (name, command)


def write_user_files(clone: Path, before: str):
    """The files a user writes before running ``before`` (data paths only; commands stay as printed)."""
    demo = load_samples({"source": "samplesheet", "samplesheet": str(clone / "results/demo/samples.tsv")}, {}, None)
    relative = demo.apply(lambda col: col.map(lambda p: os.path.relpath(p, clone) if p.startswith("/") else p))
    if "my_cohort.yaml" in before and not (clone / "my_cohort.yaml").exists():
        (clone / "my_cohort.yaml").write_text(printed_file("README.md", "my_cohort.yaml"))
        relative.to_csv(clone / "cohort.tsv", sep="\t", index=False)  # the sheet it names: the demo's own scans
    if "my_predict.yaml" in before and not (clone / "my_predict.yaml").exists():
        (clone / "my_predict.yaml").write_text(printed_file("docs/predict.md", "my_predict.yaml"))
        sheet = printed_file("docs/predict.md", "new_patients.tsv")
        (clone / "new_patients.tsv").write_text(sheet)
        new = pd.read_csv(io.StringIO(sheet), sep="\t", dtype=str).iloc[0]
        for column in new.index.drop(["patient", "scan"]):  # a column the demo lacks fails here: KeyError
            (clone / new[column]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(clone / relative.at[0, column], clone / new[column])
    if "my_dicom_predict.yaml" in before and not (clone / "my_dicom_predict.yaml").exists():
        # another demo scan as a hospital has it: one DICOM series per sequence (tests/dicom_series.py)
        series = patient_series({m: clone / relative.at[1, m] for m in ("t1", "t2", "adc")}, clone / "NEW002" / "dicom")
        pd.DataFrame([{"patient": "NEW002", "scan": "NEW002_1",
                       **{m: os.path.relpath(folder, clone) for m, folder in series.items()}}]).to_csv(
            clone / "dicom_patients.tsv", sep="\t", index=False)
        (clone / "my_dicom_predict.yaml").write_text(yaml.safe_dump(
            {"predict": {"samplesheet": "dicom_patients.tsv", "model": "hrfcn3d"}}))


@pytest.mark.slow  # the demo, sample-sheet, predict and real-data runs of the docs: ~7 min on 2 cores
def test_documented_commands(tmp_path):
    clone = fresh_clone(tmp_path / "clone")
    (clone / ".venv").symlink_to(Path(sys.executable).parent.parent)
    (tmp_path / "shared").symlink_to(SHARED)  # ../shared beside the clone, as docs/real.md asks (read only)
    env = user_env(clone, CESYNTH_CONFIGFILE=tiny_configfile(clone))
    seconds = []
    for name, command in HERE:
        if (clone / "results/demo/samples.tsv").exists():
            write_user_files(clone, command)
        result = run_command(command, clone, env, timeout=TIMEOUT_S)
        seconds.append((f"{name}: {command}", result.seconds))
        assert result.returncode == 0, f"{name}: {command}\n{result.out[-6000:]}"
        assert "Traceback" not in result.out, f"{name}: {command}\n{result.out[-6000:]}"
    print(f"\n{len(HERE)} documented commands ran as printed:")
    for command, s in seconds:
        print(f"  {s:6.0f} s  {command}")

    results, cohort = clone / "results", clone / "results" / "cohort"  # the demo's, config/cohort.yaml's
    for study in STUDIES:
        assert (results / "studies" / study / "summary.html").stat().st_size > 1000
        assert (cohort / "studies" / study / "summary.html").stat().st_size > 1000
    assert (results / "report.html").stat().st_size > 100_000
    provenance = (cohort / "studies" / "provenance" / "provenance.html").read_text()
    assert "cohort.tsv" in provenance  # the sample-sheet run read the sheet
    synth = cohort / "predict" / "NEW001_1" / "NEW001_1_model-hrfcn3d_desc-synthetic_ce_t1.nii.gz"
    assert synth.stat().st_size > 1000
    read_back = nib.load(cohort / "predict" / "NEW002_1" / "synthetic.nii.gz")  # the DICOM series, via dcm2niix
    native = nib.load(cohort / "predict" / "NEW002_1" / "NEW002_1_model-hrfcn3d_desc-synthetic_ce_t1.nii.gz")
    assert read_back.shape == native.shape and read_back.get_fdata().max() > 0.1
    assert pd.read_csv(clone / "cohort.tsv", sep="\t").scan.tolist() == \
        pd.read_csv(results / "demo" / "samples.tsv", sep="\t").scan.tolist()


@pytest.mark.slow
def test_install_commands(tmp_path):
    """The README's install line for real (network, several minutes), then scripts/test.sh collecting."""
    clone = fresh_clone(tmp_path / "clone")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PYTEST_ADDOPTS"] = "--collect-only -q"  # scripts/test.sh would run this suite inside itself
    for name, command in INSTALL:
        result = run_command(command, clone, env, timeout=3000)
        print(f"\n{command}: {result.seconds:.0f} s")
        assert result.returncode == 0, f"{name}: {command}\n{result.out[-6000:]}"
    check = run_command(".venv/bin/python -c 'import cesynth, torch, ants, snakemake; print(cesynth.__file__)'",
                        clone, env, timeout=300)
    assert check.returncode == 0 and str(clone) in check.stdout, check.out


def test_every_relative_link_of_the_docs_resolves():
    """A link is read from the file that holds it (docs/workflow.md once linked `docs/inputs.md`, a file that
    does not exist beside it)."""
    pages = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    broken = [(page.relative_to(REPO).as_posix(), target) for page in pages
              for target in re.findall(r"\]\(([^)#\s]+)", page.read_text())
              if "://" not in target and not (page.parent / target).exists()]
    assert not broken, broken
