"""k-fold cross-validation by patient: every patient scored by models that never saw it (out of fold, OOF).

The folds are fixed in a table (``crossval.folds``: scan, patient, fold). :func:`balanced_folds` is how the real
study's table was made from each patient's site and enhancing-tumour volume, so that each fold gets a share of
every site and of small and large enhancing tumours.

Each model of ``crossval.models`` becomes k fold models, ``<model>_fold<k>``, trained on the other folds' patients
and applied to fold k's; ``<model>_oof`` pools their syntheses, so that the study tables and t-tests run over every
patient. The learning curve adds ``<model>_fold<k>_n<n>``: the same fold, trained on a nested subset of n of its
training patients (drawn with ``crossval.seed``). The plain ``<model>`` trains on every patient: the model that ships.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cesynth.inputs.validate import InputError, Problem
from cesynth.io import atomic_output

OOF_SUFFIX = "_oof"


def balanced_folds(patients: pd.DataFrame, k: int) -> pd.Series:
    """Fold (1..k) of each row of ``patients`` (columns patient, site, et_ml; one row per patient).

    Greedy, largest enhancing tumour first (patients without a label last): each patient goes to the fold, among
    those not yet full (at most ceil(n / k) patients), with the fewest patients of its site, then the least
    enhancing tumour, then the fewest patients (then the lowest number). Every fold gets a share of each site
    and of the enhancing tissue."""
    et = patients.et_ml.fillna(-1.0)  # unlabelled patients after the smallest labelled tumour
    order = patients.assign(_et=et).sort_values(["_et", "patient"], ascending=[False, True], kind="stable").index
    cap = -(-len(patients) // k)
    count, volume, per_site = np.zeros(k + 1), np.zeros(k + 1), {}
    folds = pd.Series(0, index=patients.index, name="fold")
    for row in order:
        site = per_site.setdefault(patients.site[row], np.zeros(k + 1))
        fold = min((f for f in range(1, k + 1) if count[f] < cap), key=lambda f: (site[f], volume[f], count[f], f))
        folds[row] = fold
        site[fold] += 1
        count[fold] += 1
        volume[fold] += max(et[row], 0.0)
    return folds


@dataclass(frozen=True)
class FoldModel:
    """One cross-validation model: ``base``'s settings trained on ``train``, applied to ``test``."""
    base: str
    fold: int
    n_train: int | None  # learning curve: a subset of this many training patients (None: all of the fold's)
    train: tuple[str, ...]
    test: tuple[str, ...]


@dataclass(frozen=True)
class CrossValidation:
    folds: dict[int, tuple[str, ...]]  # fold -> its scans
    models: dict[str, FoldModel] = field(default_factory=dict)  # name -> fold model
    pooled: dict[str, list[str]] = field(default_factory=dict)  # <model>_oof -> its k fold models

    def curve_models(self, curve: dict | None) -> dict[str, FoldModel]:
        """The points of the learning curve ``curve`` ({model, folds, n_train}): its model's fold models of those
        folds, subsets and the fold's whole training part alike."""
        if not curve:
            return {}
        return {n: m for n, m in self.models.items() if m.base == curve["model"] and m.fold in curve["folds"]}


def load_folds(path, samples: pd.DataFrame) -> pd.DataFrame:
    """The fold table (scan, fold), checked against the sample sheet: every scan once, a patient in one fold."""
    table = pd.read_csv(path, sep="\t", dtype={"scan": str, "patient": str})
    problems = []
    if not {"scan", "fold"} <= set(table.columns):
        raise InputError([Problem("*", str(path), "the fold table needs columns scan and fold")])
    known = set(samples.scan)
    problems += [Problem(s, str(path), "is in the fold table but not in the sample sheet")
                 for s in table.scan if s not in known]
    problems += [Problem(s, str(path), "has no fold") for s in sorted(known - set(table.scan))]
    problems += [Problem(s, str(path), "is listed more than once") for s in table.scan[table.scan.duplicated()]]
    table = table.drop(columns="patient", errors="ignore").merge(samples[["scan", "patient"]], on="scan")
    for patient, folds in table.groupby("patient").fold.unique().items():
        if len(folds) > 1:
            problems.append(Problem(patient, str(path), f"patient {patient} has scans in folds {sorted(map(int, folds))}"))
    if problems:
        raise InputError(problems)
    return table[["scan", "patient", "fold"]].astype({"fold": int})


def design(folds: pd.DataFrame, models: list[str], curve: dict | None, seed: int) -> CrossValidation:
    """The fold models of ``models`` and, for ``curve`` ({model, folds, n_train}), the learning-curve models."""
    fold_scans = {int(f): tuple(g.scan) for f, g in folds.groupby("fold")}
    patient_of = dict(zip(folds.scan, folds.patient))
    out, pooled = {}, {}

    def fold_model(base, fold, n_train=None):
        train = [s for f, scans in fold_scans.items() if f != fold for s in scans]
        if n_train is not None:  # nested subsets: a seeded order of the fold's training patients, first n of it
            patients = list(dict.fromkeys(patient_of[s] for s in train))
            kept = set(np.random.default_rng([seed, fold]).permutation(patients)[:n_train])
            train = [s for s in train if patient_of[s] in kept]
        return FoldModel(base, fold, n_train, tuple(train), fold_scans[fold])

    for base in models:
        pooled[base + OOF_SUFFIX] = []
        for fold in fold_scans:
            out[f"{base}_fold{fold}"] = fold_model(base, fold)
            pooled[base + OOF_SUFFIX].append(f"{base}_fold{fold}")
    if curve:
        for fold in curve["folds"]:
            for n in curve["n_train"]:
                out[f"{curve['model']}_fold{fold}_n{n}"] = fold_model(curve["model"], fold, n)
    return CrossValidation(fold_scans, out, pooled)


def check(crossval: dict, config_models: dict, folds: pd.DataFrame | None = None) -> list[str]:
    """Problems of the ``crossval`` section (one line each)."""
    problems = [f"crossval.models: {m!r} is not a model" for m in crossval["models"] if m not in config_models]
    curve = crossval.get("learning_curve")
    if curve:
        if curve["model"] not in crossval["models"]:
            problems.append(f"crossval.learning_curve.model {curve['model']!r} is not among crossval.models")
        if folds is not None:
            known = set(folds.fold)
            problems += [f"crossval.learning_curve.folds: no fold {f}" for f in curve["folds"] if f not in known]
    return problems


def split_table(folds: pd.DataFrame, samples: pd.DataFrame) -> pd.DataFrame:
    """The study's split under cross-validation: every scan is scored (set B with a tumour mask, else test A)
    and every scan trains the model that ships."""
    masks = dict(zip(samples.scan, samples.tumour_mask.astype(str)))
    return pd.DataFrame({"scan": folds.scan, "patient": folds.patient,
                         "set": ["B" if masks.get(s) else "test_A" for s in folds.scan], "fold": folds.fold})


def pool_files(fold_files, pooled_files) -> None:
    """Copy each fold model's file of a scan to the pooled model's file of the same name (the scan's)."""
    by_name = {Path(f).name: f for f in fold_files}
    missing = [p for p in pooled_files if Path(p).name not in by_name]
    if missing:
        raise ValueError(f"no fold model wrote {', '.join(Path(p).name for p in missing)}")
    for pooled in pooled_files:
        with atomic_output(pooled) as tmp:
            shutil.copyfile(by_name[Path(pooled).name], tmp)


# Training-set sizes the learning curve projects to (extrapolation): a mid-size study and the paper's 369 scans.
PROJECT_TO = (100, 369)


def learning_curve(metrics: pd.DataFrame, identity: pd.DataFrame, models: dict[str, FoldModel],
                   min_et_ml: float = 5.0) -> pd.DataFrame:
    """Out-of-fold gain over identity per fold model: mean brain PSNR gain on its fold's scans, and the ET contrast
    (synthesis and truth) on its fold's patients with at least ``min_et_ml`` of enhancing tumour."""
    baseline = identity.set_index("scan")
    rows = []
    for name, model in models.items():
        own = metrics[metrics.model == name].set_index("scan")
        enhancing = own[own.et_ml >= min_et_ml] if "et_ml" in own else own.iloc[:0]
        rows.append({"model": name, "fold": model.fold, "n_train": len(set(model.train)),
                     "subset": model.n_train is not None, "scans": len(own),
                     "psnr_gain": float((own.psnr_brain - baseline.psnr_brain.loc[own.index]).mean()),
                     "et_scans": len(enhancing),
                     "et_contrast": float(enhancing.et_contrast.mean()) if len(enhancing) else float("nan"),
                     "et_contrast_truth": float(enhancing.et_contrast_truth.mean()) if len(enhancing) else float("nan")})
    table = pd.DataFrame(rows).sort_values(["fold", "n_train"], ignore_index=True)
    table["et_contrast_share"] = table.et_contrast / table.et_contrast_truth
    return table


def fit_trend(curve: pd.DataFrame, column: str, project_to=PROJECT_TO) -> dict:
    """Least-squares line of ``column`` against log(n_train) over every point, and its value at ``project_to``
    (extrapolation: beyond the largest training set measured)."""
    points = curve.dropna(subset=[column])
    slope, intercept = np.polyfit(np.log(points.n_train), points[column], 1)
    return {"metric": column, "slope_per_log_n": float(slope), "intercept": float(intercept),
            "fitted_on": f"n_train {int(points.n_train.min())}-{int(points.n_train.max())}, {len(points)} points",
            **{f"projected_n{n}": float(intercept + slope * np.log(n)) for n in project_to}}
