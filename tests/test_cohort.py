import pandas as pd
import pytest

from cesynth.inputs.cohort import check_split, load_split, split_cohort
from cesynth.inputs.demo import scan_table
from cesynth.inputs.validate import InputError

DEMO = dict(seed=1, patients=12, followups=4, expert_masks=3, tumour_fraction=0.8, voxel_mm=1.0,
            head_scale=0.8, noise=0.02)


def test_split_is_by_patient_and_sets_b_from_masks(tmp_path):
    table = scan_table(DEMO, tmp_path)
    split = split_cohort(table, test_fraction=0.25, seed=0)
    assert set(split.scan[split.set == "B"]) == set(table.scan[table.tumour_mask != ""])
    assert (split.set == "B").sum() == 3
    train_patients = set(split.patient[split.set == "train"])
    assert train_patients and not train_patients & set(split.patient[split.set != "train"])
    assert (split.set == "test_A").any()
    assert split.equals(split_cohort(table, 0.25, 0))  # seeded
    assert not split.equals(split_cohort(table, 0.25, 1))


def test_user_split_with_leaked_patient_is_rejected(tmp_path):
    table = scan_table(DEMO, tmp_path)
    split = split_cohort(table, 0.25, 0)
    patient = table.patient[table.patient.duplicated()].iloc[0]  # a patient with a follow-up scan
    scans = list(table.scan[table.patient == patient])
    split.loc[split.scan == scans[0], "set"] = "train"
    split.loc[split.scan == scans[1], "set"] = "test_A"
    problems = check_split(split, table)
    assert any(f"patient {patient} has scans in training and in a test set" in str(p) for p in problems)
    path = tmp_path / "split.tsv"
    split[["scan", "set"]].to_csv(path, sep="\t", index=False)
    with pytest.raises(InputError, match=patient):
        load_split({"table": str(path)}, table)


def test_set_b_without_mask_and_unknown_set_are_reported(tmp_path):
    table = scan_table(DEMO, tmp_path)
    split = pd.DataFrame({"scan": table.scan, "patient": table.patient, "set": "train"})
    no_mask = table.scan[table.tumour_mask == ""].iloc[0]
    split.loc[split.scan == no_mask, "set"] = "B"
    split.loc[0 if split.scan[0] != no_mask else 1, "set"] = "holdout"
    messages = " | ".join(map(str, check_split(split, table)))
    assert f"scan {no_mask}: is in set B but has no tumour_mask" in messages
    assert "unknown set 'holdout'" in messages


def test_set_b_patients_caps_set_b_and_the_rest_joins_set_a(tmp_path):
    table = scan_table(DEMO, tmp_path)
    table["tumour_mask"] = [f"{s}_mask.nii.gz" for s in table.scan]  # like UCSF-PDGM: every scan has one
    everyone = split_cohort(table, 0.25, 0)
    assert set(everyone.set) == {"B"}  # the paper's rule alone leaves nothing to train on
    split = split_cohort(table, 0.25, 0, set_b_patients=3)
    assert split.patient[split.set == "B"].nunique() == 3
    train_patients = set(split.patient[split.set == "train"])
    assert train_patients and not train_patients & set(split.patient[split.set != "train"])
    assert (split.set == "test_A").any() and split.equals(split_cohort(table, 0.25, 0, set_b_patients=3))
    without = table.assign(tumour_mask="")
    assert split_cohort(without, 0.25, 0, set_b_patients=3).equals(split_cohort(without, 0.25, 0))
