"""The cohort: which scans exist, and the A/B split of the study (paper section III-A).

Set B holds the scans that carry an expert tumour mask (tumour-region evaluation). Set A holds
the rest and is split BY PATIENT into training and validation (= test set A), so no patient has
scans on both sides. Other scans of a set-B patient go to test set A, never to training.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cesynth.inputs import demo, sources
from cesynth.inputs.validate import SCAN_OPTIONS, InputError, Problem

SETS = ("train", "val", "test_A", "B")  # val: held out of training and of the tests (validation curves only)
# input.source and split.validation choices (config/schema.yaml's enums are tested against these)
SOURCES = ("demo", "samplesheet", "bids", "ucsf_pdgm", "brats")
VALIDATION = ("test_A", "val", "none")


def load_samples(input_cfg: dict, demo_cfg: dict, demo_dir) -> pd.DataFrame:
    """The sample table: patient, scan, one path column per modality, tumour_mask ('' when none)."""
    if input_cfg["source"] not in SOURCES:
        raise ValueError(f"input source must be one of {SOURCES}, got {input_cfg['source']!r}")
    if input_cfg["source"] == "demo":
        return demo.scan_table(demo_cfg, demo_dir)
    if input_cfg["source"] == "bids":
        return sources.bids_table(input_cfg["bids"])
    if input_cfg["source"] == "ucsf_pdgm":
        return sources.ucsf_pdgm_table(input_cfg["ucsf_pdgm"]["root"])
    if input_cfg["source"] == "brats":
        return sources.brats_table(input_cfg["brats"]["root"])
    path = Path(input_cfg["samplesheet"])
    sep = "," if path.suffix.lower() == ".csv" else "\t"
    table = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    if "tumour_mask" not in table.columns:
        table["tumour_mask"] = ""
    base = path.parent  # relative paths in a sheet are relative to the sheet
    for column in table.columns.difference(["patient", "scan", *SCAN_OPTIONS]):
        table[column] = [str(base / p) if p and not Path(p).is_absolute() else p for p in table[column]]
    return table


def tumour_mask_labels(input_cfg: dict) -> list[int] | None:
    """Labels that are tumour when masks are label maps (None: masks are 0/1)."""
    return _mask_labels(input_cfg, "tumour_mask_labels", "labels")


def enhancing_labels(input_cfg: dict) -> list[int] | None:
    """Labels of the enhancing tumour (ET) in label-map masks (None: no ET channel, e.g. 0/1 masks)."""
    return _mask_labels(input_cfg, "enhancing_labels", "enhancing")


def _mask_labels(input_cfg: dict, key: str, kind: str) -> list[int] | None:
    """``input.<key>`` if set, else what the source's layout defines for ``kind`` (BraTS release, UCSF-PDGM)."""
    if input_cfg.get(key):
        return list(input_cfg[key])
    if input_cfg["source"] == "brats":
        return sources.BRATS_RELEASES[sources.brats_release(input_cfg["brats"]["root"])][kind]
    return sources.UCSF_PDGM_LABELS[kind] if input_cfg["source"] == "ucsf_pdgm" else None


def split_cohort(table: pd.DataFrame, test_fraction: float, seed: int, set_b_patients: int | None = None
                 ) -> pd.DataFrame:
    """Assign every scan to train, test_A or B; deterministic given ``seed``.

    ``set_b_patients``: at most this many patients with a tumour mask form set B (drawn with ``seed``);
    the others' scans join set A like scans without a mask.
    """
    has_mask = table.tumour_mask.astype(str).str.len() > 0
    b_patients = sorted(set(table.patient[has_mask]))
    if set_b_patients is not None and set_b_patients < len(b_patients):
        # own generator: the train/test_A draw below stays what it was without this option
        b_patients = list(np.random.default_rng([seed, 1]).permutation(b_patients)[:set_b_patients])
    is_b = has_mask & table.patient.isin(b_patients)
    b_patients = set(b_patients)
    a_patients = sorted(set(table.patient) - b_patients)
    rng = np.random.default_rng(seed)
    n_test = max(1, round(test_fraction * len(a_patients))) if len(a_patients) > 1 else 0
    held_out = set(rng.permutation(a_patients)[:n_test]) | b_patients
    sets = np.where(is_b, "B", np.where(table.patient.isin(held_out), "test_A", "train"))
    return pd.DataFrame({"scan": table.scan, "patient": table.patient, "set": sets})


def check_split(split: pd.DataFrame, table: pd.DataFrame) -> list[Problem]:
    """Problems of a user-supplied split: unknown sets, leaked patients, set B without masks."""
    problems = [Problem(s, "", f"unknown set {v!r}; use one of {SETS}") for s, v in zip(split.scan, split.set)
                if v not in SETS]
    masks = dict(zip(table.scan, table.tumour_mask.astype(str)))
    problems += [Problem(s, "", "is in set B but has no tumour_mask in the sample sheet")
                 for s in split.scan[split.set == "B"] if not masks.get(s)]
    problems += [Problem(s, "", "is in the split table but not in the sample sheet") for s in split.scan
                 if s not in masks]
    train_patients = set(split.patient[split.set == "train"])
    for patient in sorted(train_patients & set(split.patient[split.set != "train"])):
        problems.append(Problem(",".join(split.scan[split.patient == patient]), "",
                                f"patient {patient} has scans in training and in a test set"))
    return problems


def validation_scans(split: pd.DataFrame, validation: str) -> list[str]:
    """Scans behind the validation curves (``split.validation``); 'val' without such scans is refused."""
    if validation not in VALIDATION:
        raise ValueError(f"split.validation must be one of {VALIDATION}, got {validation!r}")
    if validation == "none":
        return []
    scans = list(split.scan[split.set == validation])
    if validation == "val" and not scans:
        raise InputError([Problem("*", "", "split.validation is 'val' but the split table has no 'val' scans")])
    return scans


def load_split(split_cfg: dict, table: pd.DataFrame) -> pd.DataFrame:
    """The configured split: a user's table if given, else :func:`split_cohort`."""
    if split_cfg.get("table"):
        split = pd.read_csv(split_cfg["table"], sep="\t", dtype=str)
        if "patient" not in split.columns:
            split = split.merge(table[["scan", "patient"]], on="scan", how="left")
        problems = check_split(split, table)
        if problems:
            raise InputError(problems)
        return split[["scan", "patient", "set"]]
    return split_cohort(table, split_cfg["test_fraction"], split_cfg["seed"], split_cfg.get("set_b_patients"))
