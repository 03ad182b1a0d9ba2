"""Per-voxel uncertainty of a synthetic CE-T1: where the synthesis should not be trusted.

Test-time augmentation (TTA): the trained model synthesizes the scan again from slightly changed
views of its inputs (mirrored left-right, moved by a slice or a few voxels), each prediction is
moved back onto the scan, and the uncertainty of a voxel is the standard deviation of its
predictions over the views, the synthesis itself included. A voxel whose value depends on where the
slice windows start, on the side of the head it is on, or on the sampling grid of the strided
convolutions is one the model has not learnt robustly; such voxels are where its errors are.

The ``combined`` map (the default) adds two terms that need no model: how far the synthesis departs from
the measured T1 (contrast the model drew, which it may have drawn wrongly) and the synthesis's local texture
(edges and vessels, where a voxel's misplacement costs most). Chosen on held-out training patients
(docs/uncertainty.md).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def tta_views(pred, inputs: np.ndarray, views, synthesizer, brain) -> tuple[np.ndarray, list]:
    """(uncertainty map, members) of a synthesis ``pred`` (Z, Y, X; clipped and masked) of ``inputs`` (M, Z, Y, X).

    Each view's prediction (``synthesizer``'s tiling) is clipped to [0, 1] like the synthesis; the map is the
    standard deviation over ``pred`` and the views, 0 outside ``brain``.
    """
    members = [np.asarray(pred, np.float32)]
    members += [np.clip(raw, 0, 1) * brain for raw in synthesizer.predict_views(inputs, views)]
    return (np.std(members, axis=0) * brain).astype(np.float32), members


def scan_map(synthesizer, stack, synth, uncertainty: dict) -> np.ndarray:
    """The uncertainty map (Z, Y, X) of the synthesis ``synth`` of one preprocessed ``stack`` (:class:`Stack`).

    ``uncertainty``: the config section; the views are predicted with the synthesis's own tiling, and the map is
    smoothed by ``uncertainty.smooth`` voxels (Gaussian sigma).
    """
    from scipy.ndimage import gaussian_filter

    from cesynth.infer.inference import views_for

    brain = np.asarray(stack["brain_mask"]) > 0
    views = views_for(synthesizer.model, uncertainty["views"])
    spread, _ = tta_views(synth, synthesizer.inputs(stack), views, synthesizer, brain)
    if uncertainty["method"] == "combined":
        spread = SPREAD_WEIGHT * spread + departure_and_texture(synth, np.asarray(stack["t1"]), brain)
    sigma = uncertainty.get("smooth", 0.0)
    return (gaussian_filter(spread, sigma) * brain).astype(np.float32) if sigma > 0 else spread


# Both chosen on held-out training patients (docs/uncertainty.md). The spread's weight: the model-free terms
# rank the error better, the spread flags missed enhancement (where the synthesis did not depart from the T1);
# 4 is the largest weight that kept the rank correlation within 0.005 of the best. The texture's Gaussian sigma
# (voxels): 0.7, about a 3-voxel neighbourhood, and 1.0 ranked the error alike.
SPREAD_WEIGHT = 4.0
TEXTURE_SIGMA = 0.7


def departure_and_texture(synth, t1, brain) -> np.ndarray:
    """|synthesis - T1| plus the local standard deviation of the synthesis, in the synthesis's units, 0 outside
    ``brain``: the model-free terms of the ``combined`` map."""
    from scipy.ndimage import gaussian_filter

    synth = np.asarray(synth, np.float32)
    mean = gaussian_filter(synth, TEXTURE_SIGMA)
    texture = np.sqrt(np.maximum(gaussian_filter(synth * synth, TEXTURE_SIGMA) - mean * mean, 0))
    return ((np.abs(synth - t1) + texture) * brain).astype(np.float32)


def write_maps(weights, stack_paths, synth_paths, out_paths, inference, uncertainty: dict):
    """The uncertainty map of every synthesis in ``synth_paths`` (NIfTI, model space), written to ``out_paths``;
    ``inference``: the :class:`cesynth.infer.inference.InferenceSettings` the syntheses were made with."""
    from cesynth.infer.inference import Synthesizer
    from cesynth.io import Stack, load_nifti, save_nifti

    synthesizer = Synthesizer.load(weights, inference)
    for stack_path, synth_path, out_path in zip(stack_paths, synth_paths, out_paths):
        stack = Stack(stack_path)
        synth = stack.to_xyz(load_nifti(synth_path)[0])  # the transpose is its own inverse: (X,Y,Z) -> (Z,Y,X)
        spread = scan_map(synthesizer, stack, synth, uncertainty)
        save_nifti(stack.to_xyz(spread), stack.affine, out_path, description=describe(uncertainty))


def describe(uncertainty: dict) -> str:
    """The NIfTI description of an uncertainty map (79 characters at most)."""
    return f"UNCERTAINTY of a SYNTHETIC CE-T1 (cesynth {uncertainty['method']})"


_TTA = ("the per-voxel standard deviation of the synthetic CE-T1 over test-time augmented views of the inputs "
        "(mirrored, moved by a voxel or a slice)")
# uncertainty.method -> how to read its map (sidecars, DICOM comments, report captions).
METHODS = {
    "tta": f"{_TTA[0].upper()}{_TTA[1:]}",
    "combined": (f"The sum of {SPREAD_WEIGHT:g} x {_TTA}, of |synthesis - T1| (contrast the model drew) and of the "
                 "synthesis's local standard deviation (edges, vessels), smoothed"),
}
_UNITS_AND_LIMITS = (", in the synthesis's intensity units (equalized [0, 1] brain). Bright = do not trust the "
                     "synthetic contrast there. Dark does not prove the synthesis right: a lesion the model never "
                     "learnt can be missed consistently.")


def how_to_read(method: str) -> str:
    """What the map of ``method`` is and how to read it, in one paragraph."""
    return METHODS[method] + _UNITS_AND_LIMITS


def write_prediction_map(model_space, model_affine, native, native_affine, out: dict, record: dict) -> dict:
    """Write a new patient's uncertainty map (``out``: uncertainty on the native T1 grid, uncertainty_model, and
    uncertainty_sidecar naming the method); ``record`` (model, weights, synthesis file, settings) joins the sidecar.
    Where the synthesis is also a DICOM series, :func:`cesynth.infer.predict.write_dicom` writes ``native`` as a
    second one.
    """
    from cesynth.io import save_nifti, write_json

    description, method = describe(record["uncertainty"]), record["uncertainty"]["method"]
    save_nifti(native, native_affine, out["uncertainty"], description=description)
    save_nifti(model_space, model_affine, out["uncertainty_model"], description=description)
    sidecar = {"synthetic": True, "what": how_to_read(method), "method": method, **record,
               "space": {"uncertainty": "native grid of the input T1", "uncertainty_model": "model grid (RAS, resized)"},
               "nifti_descrip": description}
    write_json(sidecar, out["uncertainty_sidecar"])
    return sidecar


DECILES = 10


def evaluate_scan(uncertainty, synth, gt, t1, brain, enhancing=None, threshold=0.1, delta=0.1):
    """(metrics row, calibration rows) of one scan's uncertainty map against its real error, in the brain.

    ``spearman``: rank correlation of uncertainty and |synthesis - ground truth|; ``auroc``: of the uncertainty
    for the voxels whose |error| exceeds ``threshold``; calibration: the mean uncertainty and mean |error| of
    each uncertainty decile. ``enhancing`` (the enhancing-tumour label): its voxels that truly enhance
    (CE-T1 - T1 > ``delta``) but not in the synthesis are *missed enhancement*; ``missed_flagged`` is the
    fraction of them above the 90th percentile of the brain's uncertainty (0.1 by chance) and ``missed_auroc`` the AUROC of
    the uncertainty for them against the other brain voxels.
    """
    from scipy.stats import spearmanr

    brain = np.asarray(brain, bool)
    u, error = np.asarray(uncertainty, np.float64)[brain], np.abs(np.asarray(synth, np.float64) - gt)[brain]
    row = {"spearman": float(spearmanr(u, error)[0]) if u.size > 1 else float("nan"),
           "auroc": auroc(u, error > threshold), "error_fraction": float(np.mean(error > threshold)),
           "mean_uncertainty": float(u.mean()), "mae": float(error.mean())}
    row.update(_missed_enhancement(uncertainty, synth, gt, t1, brain, enhancing, delta))
    decile = np.minimum((_ranks(u) * DECILES / u.size).astype(int), DECILES - 1)  # equal-count bins by rank
    calibration = [{"decile": d + 1, "uncertainty": float(u[decile == d].mean()), "mae": float(error[decile == d].mean()),
                    "voxels": int((decile == d).sum())} for d in range(DECILES) if (decile == d).any()]
    return row, calibration


def _missed_enhancement(uncertainty, synth, gt, t1, brain, enhancing, delta) -> dict:
    nan = float("nan")
    if enhancing is None:
        return {"enhancing_voxels": 0, "missed_voxels": 0, "missed_flagged": nan, "missed_auroc": nan}
    truly = np.asarray(enhancing, bool) & brain & (gt - t1 > delta)
    missed = truly & (synth - t1 <= delta)
    u = np.asarray(uncertainty)[brain]
    flag = np.percentile(u, 100 * (1 - 1 / DECILES))
    flagged = float(np.mean(np.asarray(uncertainty)[missed] > flag)) if missed.any() else nan
    return {"enhancing_voxels": int(truly.sum()), "missed_voxels": int(missed.sum()), "missed_flagged": flagged,
            "missed_auroc": auroc(u, missed[brain])}


def _ranks(values):
    """0-based ranks, ties broken by position (so deciles hold equal voxel counts even on a flat map)."""
    ranks = np.empty(values.size, dtype=np.int64)
    ranks[np.argsort(values, kind="stable")] = np.arange(values.size)
    return ranks


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for the ``positive`` voxels (Mann-Whitney U; ties count half);
    NaN when either class is empty."""
    from scipy.stats import rankdata

    positive = np.asarray(positive, bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def enhancing_label(stack):
    """The enhancing-tumour label of a stack: ``et_mask`` when the preprocessing wrote it, else the tumour mask
    (whose truly enhancing voxels :func:`evaluate_scan` keeps), else None."""
    for channel in ("et_mask", "tumour_mask"):
        if stack.has(channel):
            return np.asarray(stack[channel]) > 0
    return None


def evaluate(synth_paths, uncertainty_paths, stack_paths, scans, reference="ce_t1", threshold=0.1, delta=0.1):
    """(metrics, calibration) tables of :func:`evaluate_scan`, one scan per row / per (scan, decile)."""
    from cesynth.io import Stack, load_nifti

    rows, calibration = [], []
    for scan, synth_path, map_path, stack_path in zip(scans, synth_paths, uncertainty_paths, stack_paths):
        stack = Stack(stack_path)
        synth, uncertainty = (stack.to_xyz(load_nifti(p)[0]) for p in (synth_path, map_path))  # (X,Y,Z) -> (Z,Y,X)
        row, deciles = evaluate_scan(uncertainty, synth, np.asarray(stack[reference]), np.asarray(stack["t1"]),
                                     np.asarray(stack["brain_mask"]) > 0, enhancing_label(stack), threshold, delta)
        rows.append({"scan": scan, **row})
        calibration += [{"scan": scan, **d} for d in deciles]
    return pd.DataFrame(rows), pd.DataFrame(calibration)
