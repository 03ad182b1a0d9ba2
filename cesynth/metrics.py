"""Evaluation metrics for synthetic CE-T1 (Chen et al., section IV-A).

Volumes are 3-D numpy arrays (X, Y, Z) with axial slices on the LAST axis;
intensities are expected in [0, 1]. Region masks are boolean arrays of the
same shape.

Protocols (``PROTOCOLS``):

* ``"paper"``: SSIM with an 11x11 Gaussian window (sigma 1.5, population
  covariance, K1 0.01, K2 0.03), per-pixel map averaged over the region's
  voxels in each slice, then over slices; PSNR peak ``MAX_I = max(gt)`` over
  the brain ("the maximum value of the image y"), the same for the tumour region.
* ``"reference"``: what the public Keras code's ``inference_3D1.py`` does:
  skimage SSIM defaults (7x7 uniform window, sample covariance) on whole,
  unmasked slices; PSNR peak ``MAX_I = REFERENCE_MAX_I = 1.0``.

MAE and PSNR are always computed over the region mask (both protocols).

NaN conventions: an empty region gives NaN for every metric of that region;
Dice is NaN when both enhancement masks are empty, sensitivity is NaN when
the ground-truth enhancement mask is empty.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter
from skimage.metrics import structural_similarity

from .io import Stack

PROTOCOLS = ("paper", "reference")
REFERENCE_MAX_I = 1.0

# Paper SSIM: sigma 1.5 truncated at 3.5 sigma -> 11x11 window, as skimage does.
_SIGMA, _TRUNCATE, _K1, _K2 = 1.5, 3.5, 0.01, 0.03
_PAD = int(_TRUNCATE * _SIGMA + 0.5)


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
    mse = np.mean((gt[mask].astype(np.float64) - pred[mask]) ** 2)
    with np.errstate(divide="ignore"):
        return float(10 * np.log10(max_i**2 / mse))


def _gaussian_ssim_map(x, y, data_range):
    """Per-pixel SSIM map of two 2-D images (Wang et al. 2004, Gaussian window)."""
    x, y = x.astype(np.float64), y.astype(np.float64)

    def filt(a):
        return gaussian_filter(a, _SIGMA, truncate=_TRUNCATE, mode="reflect")

    c1, c2 = (_K1 * data_range) ** 2, (_K2 * data_range) ** 2
    mu_x, mu_y = filt(x), filt(y)
    var_x = filt(x * x) - mu_x**2
    var_y = filt(y * y) - mu_y**2
    cov = filt(x * y) - mu_x * mu_y
    return ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )


def ssim(gt, pred, mask=None, data_range=1.0, protocol="paper") -> float:
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
    values = []
    for i in range(gt.shape[-1]):
        m = mask[..., i]
        if protocol == "reference":
            if m.any():
                values.append(
                    structural_similarity(gt[..., i], pred[..., i], data_range=data_range)
                )
            continue
        interior = np.zeros_like(m)
        interior[_PAD:-_PAD, _PAD:-_PAD] = m[_PAD:-_PAD, _PAD:-_PAD]
        if interior.any():
            values.append(_gaussian_ssim_map(gt[..., i], pred[..., i], data_range)[interior].mean())
    return float(np.mean(values)) if values else float("nan")


def enhancement_dice(gt, pred, t1, mask, delta=0.1) -> dict:
    """Overlap of enhancing voxels (CE-T1 - T1 > delta) within ``mask``.

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


def _region_metrics(gt, pred, t1, region, max_i, protocol, delta):
    enh = enhancement_dice(gt, pred, t1, region, delta)
    return {
        "mae": mae(gt, pred, region),
        "psnr": psnr(gt, pred, region, max_i),
        "ssim": ssim(gt, pred, region, data_range=1.0, protocol=protocol),
        "dice_enh": enh["dice"],
        "sens_enh": enh["sensitivity"],
    }


def scan_metrics(gt, pred, t1, brain_mask, tumour_mask=None, protocol="paper", delta=0.1) -> dict:
    """All metrics for one scan, over the brain and (optionally) tumour region.

    Keys are always ``{mae,psnr,ssim,dice_enh,sens_enh}_{brain,tumour}``; the
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
    return out


def score_predictions(pred_paths, stack_paths, scans, protocol="paper", delta=0.1, reference="ce_t1"):
    """One row of :func:`scan_metrics` per scan, from synthetic NIfTIs and preprocessed stacks."""
    rows = []
    for scan, pred_path, stack_path in zip(scans, pred_paths, stack_paths):
        stack = Stack(stack_path)
        pred = np.asarray(nib.load(str(pred_path)).dataobj, dtype=np.float32)
        volumes = {name: stack.to_xyz(np.asarray(stack[name])) for name in (reference, "t1", "brain_mask")}
        tumour = stack.to_xyz(np.asarray(stack["tumour_mask"])) > 0 if stack.has("tumour_mask") else None
        rows.append({"scan": scan, **scan_metrics(volumes[reference], pred, volumes["t1"],
                                                  volumes["brain_mask"] > 0, tumour, protocol, delta)})
    return pd.DataFrame(rows)
