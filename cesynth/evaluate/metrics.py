"""Evaluation metrics for synthetic CE-T1 (Chen et al., section IV-A).

Volumes are 3-D numpy arrays (X, Y, Z) with axial slices on the LAST axis;
intensities are in the model-space range [0, 1] (:mod:`cesynth.preprocess.intensity`). Region masks are boolean arrays
of the same shape.

Protocols (``PROTOCOLS``):

* ``"paper"``: SSIM with an 11x11 Gaussian window (sigma 1.5, population
  covariance, K1 0.01, K2 0.03), per-pixel map averaged over the region's
  voxels in each slice, then over slices; PSNR peak ``MAX_I = max(gt)`` over
  the brain ("the maximum value of the image y"), the same for the tumour region.
* ``"reference"``: what the public Keras code's ``inference_3D1.py`` does:
  skimage SSIM defaults (7x7 uniform window, sample covariance) on whole,
  unmasked slices; PSNR peak ``MAX_I = REFERENCE_MAX_I = 1.0``.

MAE and PSNR are always computed over the region mask (both protocols).

Alongside, always (columns ``brasyn_*``, :func:`brasyn_metrics`), the BraSyn challenge's protocol
(BraTS 2023 missing-MRI synthesis): synthesis and truth each clipped to their OWN 0.5 and 99.5 brain
percentiles and scaled to [0, 1]; PSNR (peak 1) and MAE over the brain; the Gaussian SSIM map averaged
over the tumour (every label) and over the rest of the brain. Unlike BraSyn's script, SSIM is averaged
over brain voxels only (BraSyn averages whole masked volumes, whose shared zero background counts as
perfect), and percentiles are taken over the brain (BraSyn: over the whole volume).

Enhancing tumour (``et_*``, :func:`enhancing_tumour_metrics`), where an ET label exists: each image is
divided by the median of its normal-appearing brain (brain outside the tumour), so that numbers do not
depend on how a model space scales intensities. ``et_contrast`` = mean over ET - 1 (how much brighter
ET is than normal brain), for the synthesis and (``et_contrast_truth``) the real CE-T1; ``et_dice`` =
Dice of the predicted enhancement inside the tumour (synthesis brighter than the T1 by more than
``ET_ENHANCEMENT`` x normal brain) with the ET label, and ``et_dice_truth`` the same for the real CE-T1
(what a perfect synthesis scores: the label and the visible enhancement do not coincide exactly).

NaN conventions: an empty region gives NaN for every metric of that region;
Dice is NaN when both enhancement masks are empty, sensitivity is NaN when
the ground-truth enhancement mask is empty.
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np
import pandas as pd
from skimage.metrics import structural_similarity

from cesynth.evaluate import similarity
from cesynth.evaluate.similarity import RADIUS
from cesynth.io import Stack
from cesynth.preprocess.intensity import DATA_RANGE, HIGH

PROTOCOLS = ("paper", "reference")
REFERENCE_MAX_I = HIGH  # the reference code's peak: the top of the model-space range
BRASYN_PERCENTILES = (0.5, 99.5)
# Enhancement that counts: 30% of normal brain above the T1. The real CE-T1 of the BraTS 2018 cases then
# matches its ET label with Dice 0.6-0.9 inside the tumour at 2.5 mm (0.2 and 0.4 give about the same).
ET_ENHANCEMENT = 0.3

# Paper SSIM: the 11x11 Gaussian window of cesynth.evaluate.similarity (skimage's sigma 1.5 truncated at 3.5 sigma);
# its map leaves out _PAD pixels at each slice border.
_PAD = RADIUS


def _check_protocol(protocol):
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")


def mae(gt, pred, mask) -> float:
    """Mean absolute error over the voxels in ``mask``."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        return float("nan")
    return float(np.abs(gt[mask].astype(np.float64) - pred[mask]).mean())


def psnr(gt, pred, mask, max_i) -> float:
    """10*log10(max_i**2 / MSE), MSE over ``mask`` (inf when identical)."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        return float("nan")
    return similarity.psnr(np.mean((gt[mask].astype(np.float64) - pred[mask]) ** 2), max_i)


def _interior(mask: np.ndarray) -> np.ndarray:
    """The part of an (H, W, ...) mask that the 'valid' SSIM map covers, cropped to the map's shape."""
    return mask[_PAD:-_PAD, _PAD:-_PAD]


def _has_interior(gt) -> bool:
    return min(gt.shape[:2]) > 2 * _PAD


def ssim(gt, pred, mask=None, data_range=DATA_RANGE, protocol="paper") -> float:
    """Mean SSIM over the axial slices that contain mask voxels.

    ``"paper"``: per slice, the Gaussian SSIM map is averaged over the mask
    voxels. Like skimage (and the 'valid' training loss), pixels within
    ``_PAD`` = 5 of the slice border are excluded, so with a full mask this
    equals skimage's Gaussian SSIM; a slice whose mask lies only in that
    border does not count.

    ``"reference"``: skimage defaults on the whole slice (mask only selects
    the slices), averaged over slices.

    Returns NaN when no slice qualifies.
    """
    _check_protocol(protocol)
    mask = np.ones(gt.shape, bool) if mask is None else np.asarray(mask, bool)
    if protocol == "reference":
        values = [structural_similarity(gt[..., i], pred[..., i], data_range=data_range)
                  for i in range(gt.shape[-1]) if mask[..., i].any()]
        return float(np.mean(values)) if values else float("nan")
    if not _has_interior(gt):
        return float("nan")
    interior = _interior(mask)
    slices = [i for i in range(gt.shape[-1]) if interior[..., i].any()]
    if not slices:
        return float("nan")
    maps = similarity.ssim_map_slices(gt[..., slices], pred[..., slices], data_range)
    return float(np.mean([maps[..., j][interior[..., i]].mean() for j, i in enumerate(slices)]))


def brasyn_normalize(volume, brain) -> np.ndarray:
    """The image clipped to its own 0.5/99.5 brain percentiles (low end at least 0), scaled to [0, 1]; 0 outside."""
    low, high = np.percentile(volume[brain], BRASYN_PERCENTILES)
    low = max(float(low), 0.0)
    out = np.zeros(volume.shape, np.float64)
    out[brain] = np.clip((volume[brain] - low) / max(high - low, 1e-8), 0, 1)
    return out


def ssim_region_means(gt, pred, regions: dict, data_range=1.0) -> dict:
    """The paper's Gaussian SSIM map per axial slice, averaged over each named region's voxels.

    As :func:`ssim`, pixels within ``_PAD`` of a slice border are left out; an empty region gives NaN.
    """
    interiors = {name: _interior(region) for name, region in regions.items()} if _has_interior(gt) else {}
    slices = [i for i in range(gt.shape[-1]) if any(region[..., i].any() for region in interiors.values())]
    if not slices:
        return {name: float("nan") for name in regions}
    maps = similarity.ssim_map_slices(gt[..., slices], pred[..., slices], data_range)
    means = {}
    for name, region in interiors.items():
        selected = region[..., slices]
        means[name] = float(maps[selected].sum()) / int(selected.sum()) if selected.any() else float("nan")
    return means


def brasyn_metrics(gt, pred, brain, tumour=None) -> dict:
    """BraSyn protocol (module docstring): PSNR, MAE, SSIM of brain, tumour and healthy brain."""
    brain = np.asarray(brain, bool)
    tumour = np.zeros_like(brain) if tumour is None else np.asarray(tumour, bool) & brain
    if not brain.any():
        return {f"brasyn_{k}": float("nan") for k in ("psnr_brain", "mae_brain", "ssim_brain", "ssim_tumour",
                                                      "ssim_healthy")}
    g, p = brasyn_normalize(gt, brain), brasyn_normalize(pred, brain)
    ssims = ssim_region_means(g, p, {"brain": brain, "tumour": tumour, "healthy": brain & ~tumour})
    return {"brasyn_psnr_brain": psnr(g, p, brain, 1.0), "brasyn_mae_brain": mae(g, p, brain),
            **{f"brasyn_ssim_{name}": value for name, value in ssims.items()}}


def enhancing_tumour_metrics(gt, pred, t1, brain, tumour, enhancing, threshold=ET_ENHANCEMENT) -> dict:
    """ET contrast and Dice (module docstring); NaN without an ET label or normal-appearing brain."""
    brain = np.asarray(brain, bool)
    tumour, enhancing = np.asarray(tumour, bool) & brain, np.asarray(enhancing, bool) & brain
    normal = brain & ~tumour
    if not enhancing.any() or not normal.any():
        return {k: float("nan") for k in ("et_contrast", "et_contrast_truth", "et_dice", "et_dice_truth")}

    def relative(volume):
        return volume / max(float(np.median(volume[normal])), 1e-8)

    base = relative(t1)
    out = {}
    for suffix, image in (("", pred), ("_truth", gt)):
        scaled = relative(image)
        predicted = (scaled - base > threshold) & tumour
        out[f"et_contrast{suffix}"] = float(scaled[enhancing].mean() - 1)
        out[f"et_dice{suffix}"] = float(2 * (predicted & enhancing).sum() / (predicted.sum() + enhancing.sum()))
    return {k: out[k] for k in ("et_contrast", "et_contrast_truth", "et_dice", "et_dice_truth")}


def enhancement_dice(gt, pred, t1, mask, delta=0.1) -> dict:
    """Overlap of enhancing voxels (CE-T1 - T1 > delta, an absolute difference in model-space units:
    :mod:`cesynth.preprocess.intensity`) within ``mask``.

    Returns ``dice`` (NaN if both masks are empty) and ``sensitivity``
    (fraction of true enhancing voxels also enhancing in pred; NaN if the
    ground truth has none).
    """
    mask = np.asarray(mask, bool)
    true_enh = (gt - t1 > delta) & mask
    pred_enh = (pred - t1 > delta) & mask
    inter = np.count_nonzero(true_enh & pred_enh)
    n_true, n_pred = np.count_nonzero(true_enh), np.count_nonzero(pred_enh)
    dice = 2 * inter / (n_true + n_pred) if n_true + n_pred else float("nan")
    sens = inter / n_true if n_true else float("nan")
    return {"dice": float(dice), "sensitivity": float(sens)}


@dataclass(frozen=True)
class Region:
    """What a region metric sees: truth, synthesis and T1 (X, Y, Z) of one scan, the region's boolean mask
    (brain or tumour), the scan's PSNR peak ``max_i``, the SSIM ``protocol`` and the enhancement ``delta``."""
    gt: np.ndarray
    pred: np.ndarray
    t1: np.ndarray
    mask: np.ndarray
    max_i: float
    protocol: str
    delta: float


# Metrics of one region: name -> function(Region) -> float, reported as <name>_brain and <name>_tumour columns
# of every metrics table (NaN for an empty region). A new metric is added here (docs/extending.md).
REGION_METRICS = {
    "mae": lambda r: mae(r.gt, r.pred, r.mask),
    "psnr": lambda r: psnr(r.gt, r.pred, r.mask, r.max_i),
    "ssim": lambda r: ssim(r.gt, r.pred, r.mask, data_range=DATA_RANGE, protocol=r.protocol),
    "dice_enh": lambda r: enhancement_dice(r.gt, r.pred, r.t1, r.mask, r.delta)["dice"],
    "sens_enh": lambda r: enhancement_dice(r.gt, r.pred, r.t1, r.mask, r.delta)["sensitivity"],
}


def _region_metrics(gt, pred, t1, region, max_i, protocol, delta):
    r = Region(gt, pred, t1, np.asarray(region, bool), max_i, protocol, delta)
    return {name: metric(r) for name, metric in REGION_METRICS.items()}


def scan_metrics(gt, pred, t1, brain_mask, tumour_mask=None, protocol="paper", delta=0.1, et_mask=None) -> dict:
    """All metrics for one scan, over the brain and (optionally) tumour region.

    Keys are always ``{mae,psnr,ssim,dice_enh,sens_enh}_{brain,tumour}``, the :func:`brasyn_metrics` and
    the :func:`enhancing_tumour_metrics` (NaN without ``et_mask``); the
    tumour values are NaN when ``tumour_mask`` is None or empty. PSNR uses one
    MAX_I for both regions: the maximum of the ground-truth image (its brain, the
    rest is background 0; "paper") or 1.0 ("reference").
    """
    _check_protocol(protocol)
    brain = np.asarray(brain_mask, bool)
    if protocol == "paper":
        max_i = float(gt[brain].max()) if brain.any() else float("nan")
    else:
        max_i = REFERENCE_MAX_I
    out = {f"{k}_brain": v for k, v in _region_metrics(gt, pred, t1, brain, max_i, protocol, delta).items()}
    tumour = np.zeros_like(brain) if tumour_mask is None else np.asarray(tumour_mask, bool)
    out.update(
        {f"{k}_tumour": v for k, v in _region_metrics(gt, pred, t1, tumour, max_i, protocol, delta).items()}
    )
    out.update(brasyn_metrics(gt, pred, brain, tumour))
    out.update(enhancing_tumour_metrics(gt, pred, t1, brain, tumour, np.zeros_like(brain) if et_mask is None
                                        else et_mask))
    return out


def score_predictions(pred_paths, stack_paths, scans, protocol="paper", delta=0.1, reference="ce_t1"):
    """One row of :func:`scan_metrics` per scan, from synthetic NIfTIs and preprocessed stacks."""
    rows = []
    for scan, pred_path, stack_path in zip(scans, pred_paths, stack_paths):
        stack = Stack(stack_path)
        pred = np.asarray(nib.load(str(pred_path)).dataobj, dtype=np.float32)
        volumes = {name: stack.to_xyz(np.asarray(stack[name])) for name in (reference, "t1", "brain_mask")}
        tumour, enhancing = (stack.to_xyz(np.asarray(stack[c])) > 0 if stack.has(c) else None
                             for c in ("tumour_mask", "et_mask"))
        voxel_ml = abs(np.linalg.det(stack.affine[:3, :3])) / 1000
        rows.append({"scan": scan, **scan_metrics(volumes[reference], pred, volumes["t1"],
                                                  volumes["brain_mask"] > 0, tumour, protocol, delta, enhancing),
                     "et_ml": float(enhancing.sum() * voxel_ml) if enhancing is not None else float("nan")})
    return pd.DataFrame(rows)
