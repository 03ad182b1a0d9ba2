"""BIDS and UCSF-PDGM inputs give the same sample table as a sample sheet, and the DAG builds."""

import os

import pytest
import yaml

from cesynth.inputs.cohort import tumour_mask_labels
from cesynth.inputs.demo import write_cohort
from cesynth.inputs.sources import UCSF_PDGM_FILES, bids_table, parse_name, ucsf_pdgm_table
from cesynth.inputs.validate import check_sheet
from conftest import REPO
from test_workflow import snakemake

SUFFIXES = {"t1": "T1w", "ce_t1": "ce-gadolinium_T1w", "t2": "T2w", "adc": "ADC", "flair": "FLAIR"}
BIDS_MODALITIES = {"t1": {"suffix": "T1w"}, "ce_t1": {"suffix": "T1w", "ce": "gadolinium"}, "t2": {"suffix": "T2w"},
                   "adc": {"suffix": "ADC"}}


def write_bids_tree(demo, root):
    """The demo cohort symlinked into a BIDS tree (sessions, a ce- entity, a derivatives mask)."""
    for row in demo.itertuples():
        sub, ses = row.patient, row.scan[len(row.patient):]
        anat = root / f"sub-{sub}" / f"ses-{ses}" / "anat"
        anat.mkdir(parents=True)
        for mod, suffix in SUFFIXES.items():
            os.symlink(getattr(row, mod), anat / f"sub-{sub}_ses-{ses}_{suffix}.nii.gz")
        if row.tumour_mask:
            deriv = root / "derivatives" / "tumour" / f"sub-{sub}" / f"ses-{ses}" / "anat"
            deriv.mkdir(parents=True)
            os.symlink(row.tumour_mask, deriv / f"sub-{sub}_ses-{ses}_label-tumour_mask.nii.gz")
    (root / "dataset_description.json").write_text('{"Name": "demo", "BIDSVersion": "1.9.0"}')
    return root


@pytest.fixture(scope="module")
def demo_bids(tmp_path_factory):
    """The tiny demo cohort as a BIDS tree."""
    tmp = tmp_path_factory.mktemp("bids")
    demo = write_cohort(yaml.safe_load((REPO / "config" / "tiny.yaml").read_text())["demo"], tmp / "demo",
                        tmp / "demo" / "samples.tsv")
    return demo, write_bids_tree(demo, tmp / "bids")


def bids_cfg(root):
    return {"root": str(root), "modalities": BIDS_MODALITIES,
            "tumour_mask": {"root": "derivatives/tumour", "suffix": "mask", "label": "tumour"}}


def test_parse_name():
    assert parse_name("sub-01_ses-2_ce-gadolinium_T1w.nii.gz") == {"sub": "01", "ses": "2", "ce": "gadolinium",
                                                                   "suffix": "T1w"}
    assert parse_name("notes.txt") is None


def test_bids_table_matches_the_demo_sheet(demo_bids):
    demo, root = demo_bids
    table = bids_table(bids_cfg(root))
    assert list(table.scan) == [f"sub-{p}_ses-{s[len(p):]}" for p, s in zip(demo.patient, demo.scan)]
    assert list(table.patient) == [f"sub-{p}" for p in demo.patient]
    for mod in BIDS_MODALITIES:  # plain T1w is the non-contrast T1, the ce- file the CE-T1
        assert [os.path.realpath(p) for p in table[mod]] == [os.path.realpath(p) for p in demo[mod]]
    assert [bool(m) for m in table.tumour_mask] == [bool(m) for m in demo.tumour_mask]


def test_missing_bids_file_is_named_by_the_sheet_check(demo_bids):
    _, root = demo_bids
    table = bids_table({**bids_cfg(root), "modalities": {**BIDS_MODALITIES, "swi": {"suffix": "SWI"}}})
    problems = [str(p) for p in check_sheet(table, ["t1", "swi"])]
    assert len(problems) == len(table)
    assert problems[0] == f"scan sub-P01_ses-s1 ({root}/sub-P01/ses-s1/anat/*_SWI.nii*): swi file does not exist"


def test_bids_source_builds_the_dag(demo_bids, tmp_path):
    _, root = demo_bids
    config = tmp_path / "bids.yaml"
    config.write_text(yaml.safe_dump({"input": {"source": "bids", "bids": bids_cfg(root)}}))
    result = snakemake(tmp_path / "work", "-n", "--configfile", str(REPO / "config" / "tiny.yaml"), str(config))
    out = result.stdout + result.stderr
    assert "train_stage2" in out and "sub-P01_ses-s1" in out and "demo_cohort" not in out


def test_ucsf_pdgm_layout(tmp_path):
    for pid in ("UCSF-PDGM-0004", "UCSF-PDGM-0005"):
        (tmp_path / f"{pid}_nifti").mkdir()
    (tmp_path / "UCSF-PDGM-0004_nifti" / "UCSF-PDGM-0004_tumor_segmentation.nii.gz").touch()
    table = ucsf_pdgm_table(tmp_path)
    assert list(table.scan) == ["UCSF-PDGM-0004", "UCSF-PDGM-0005"] and list(table.patient) == list(table.scan)
    assert table.ce_t1[0] == str(tmp_path / "UCSF-PDGM-0004_nifti" / "UCSF-PDGM-0004_T1c.nii.gz")
    assert table.adc[1].endswith("UCSF-PDGM-0005_ADC.nii.gz")
    assert list(table.tumour_mask) == [str(tmp_path / "UCSF-PDGM-0004_nifti" /
                                           "UCSF-PDGM-0004_tumor_segmentation.nii.gz"), ""]
    # its segmentation is a BraTS label map: the tumour core unless the config says otherwise
    assert tumour_mask_labels({"source": "ucsf_pdgm"}) == [1, 4]
    assert tumour_mask_labels({"source": "ucsf_pdgm", "tumour_mask_labels": [4]}) == [4]
    assert tumour_mask_labels({"source": "samplesheet"}) is None


def test_ucsf_pdgm_label_maps_pass_the_input_check_and_set_b_is_capped(demo_bids, tmp_path):
    """The demo cohort laid out as UCSF-PDGM (a BraTS label map for every patient) runs the input
    check with the preset's labels, and split.set_b_patients leaves the other patients to set A."""
    import nibabel as nib
    import numpy as np
    import pandas as pd

    demo, _ = demo_bids
    root = tmp_path / "ucsf"
    for row in demo.drop_duplicates("patient").itertuples():  # UCSF-PDGM: one scan per patient
        pid = f"UCSF-PDGM-{row.patient}"
        folder = root / f"{pid}_nifti"
        folder.mkdir(parents=True)
        for mod, name in UCSF_PDGM_FILES.items():
            if mod in demo.columns:
                os.symlink(getattr(row, mod), folder / f"{pid}_{name}.nii.gz")
        ref = nib.load(row.ce_t1)
        labels = np.zeros(ref.shape, np.uint8)
        labels[10:14, 10:14, 10:14], labels[14:16, 10:14, 10:14], labels[11:13, 11:13, 11:13] = 2, 1, 4
        nib.save(nib.Nifti1Image(labels, ref.affine), folder / f"{pid}_tumor_segmentation.nii.gz")
    config = tmp_path / "ucsf.yaml"
    config.write_text(yaml.safe_dump({"input": {"source": "ucsf_pdgm", "ucsf_pdgm": {"root": str(root)}},
                                      "modalities": ["t1", "t2", "adc"], "split": {"set_b_patients": 1}}))
    work = tmp_path / "work"
    snakemake(work, "--cores", "1", "results/split.tsv", "results/qc/inputs_validated.tsv", configs=[config])
    validated = pd.read_csv(work / "results" / "qc" / "inputs_validated.tsv", sep="\t")
    assert len(validated) == demo.patient.nunique() and validated.tumour_mask.str.endswith("segmentation.nii.gz").all()
    split = pd.read_csv(work / "results" / "split.tsv", sep="\t")
    assert (split.set == "B").sum() == 1 and (split.set == "train").any() and (split.set == "test_A").any()
