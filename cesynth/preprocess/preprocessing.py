"""Model-space preprocessing of one co-registered, skull-stripped scan (paper section III-A).

Steps, in order:

1. reorient the reference grid to RAS (so axis 2 is inferior->superior: axial slices);
2. resize every volume to ``shape`` (paper: 192x256x192) by trilinear interpolation, keeping the
   field of view, and record the new affine (so outputs stay in scanner space); with ``antialias``
   a Gaussian low-pass first removes what the coarser grid cannot hold (a 1 mm BraTS scan on a
   2.5 mm grid would otherwise keep single-voxel noise and alias its edges);
3. mask with the brain mask;
4. equalize inside the brain (``histogram``: the empirical CDF of brain voxels, i.e. classic
   histogram equalization restricted to the brain, the paper's "image equalization";
   ``percentile``: linear 0.5/99.5-percentile window; ``median``: linear window [0, 3 x the brain
   median]; ``none``: min-max), which puts brain voxels in [0, 1] and leaves background 0;
5. the rough enhancement mask M = (CE-T1 - T1 > delta) for the local loss (section III-C); with expert
   labels, the tumour mask and the enhancing-tumour (ET) mask.

A channel that covers only part of the brain (a truncated field of view, a block set to one value) is
refused (:func:`coverage_problem`): a network would learn that the missing part looks like this.

The result is a channel stack (Z, Y, X) per channel, written by :func:`cesynth.io.save_stack`.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
from scipy import ndimage

# ``median``: the window's top in brain medians. Contrast changes a few percent of the brain, so the
# median of a CE-T1 lies in the same tissue as its T1's and both share one scale in every scan, however
# much of it enhances (a percentile window ends in the enhancing voxels when there are enough of
# them). 3 keeps real enhancement: the 99.5th percentile of two BraTS-form T1c brains is 2.1 and 2.6
# medians.
MEDIAN_WINDOW = 3.0
# Largest fraction of the brain an input may hold at one single value. Real images are noisy (the most
# frequent value of a real BraTS-form channel covers at most 5% of its brain, integer-valued 2013 scans
# included); a FLAIR cut off behind the ventricles (Brats18_2013_20_1) is 0 in 34% of the brain.
MAX_CONSTANT_FRACTION = 0.10


def canonical(path):
    """Load a NIfTI image reoriented to RAS; returns (array float32, affine)."""
    img = nib.as_closest_canonical(nib.load(str(path)))
    return np.asarray(img.dataobj, dtype=np.float32), img.affine


def resize(volume: np.ndarray, affine: np.ndarray, shape, order=1, antialias=False):
    """Resample ``volume`` to ``shape`` over the same field of view; returns (array, affine).

    Voxel centres are placed so that the outer voxel edges of both grids coincide. ``antialias``:
    Gaussian low-pass of sigma (scale - 1) / 2 input voxels along each shrunk axis first (scikit-image's
    choice for ``resize(anti_aliasing=True)``).
    """
    scale = np.asarray(volume.shape, dtype=float) / np.asarray(shape, dtype=float)
    if antialias and (scale > 1).any():
        volume = ndimage.gaussian_filter(volume, np.maximum((scale - 1) / 2, 0), mode="nearest")
    offset = 0.5 * scale - 0.5  # output voxel centre -> input voxel coordinate
    out = ndimage.affine_transform(volume, np.diag(scale), offset=offset, output_shape=tuple(shape), order=order,
                                   mode="nearest")
    new_affine = affine.copy()
    new_affine[:3, :3] = affine[:3, :3] * scale
    new_affine[:3, 3] = affine[:3, :3] @ offset + affine[:3, 3]
    return out.astype(np.float32), new_affine


def _histogram(values: np.ndarray) -> np.ndarray:
    """Rank of each value among brain voxels = empirical CDF; ties share the upper rank."""
    return np.searchsorted(np.sort(values), values, side="right") / values.size


def _percentile(values: np.ndarray) -> np.ndarray:
    low, high = np.percentile(values, [0.5, 99.5])
    return np.clip((values - low) / max(high - low, 1e-8), 0, 1)


def _median(values: np.ndarray) -> np.ndarray:
    return np.clip(values / max(MEDIAN_WINDOW * float(np.median(values)), 1e-8), 0, 1)


def _min_max(values: np.ndarray) -> np.ndarray:
    low, high = values.min(), values.max()
    return (values - low) / max(high - low, 1e-8)


# preprocess.equalization -> function(brain voxel values) -> the same voxels in the model-space range [0, 1]
# (cesynth/preprocess/intensity.py). config/schema.yaml's enum is tested against these keys; a new normalisation is
# added here and there (docs/extending.md).
EQUALIZATION_METHODS = {"histogram": _histogram, "percentile": _percentile, "median": _median, "none": _min_max}


def equalize(volume: np.ndarray, mask: np.ndarray, method="histogram") -> np.ndarray:
    """Map brain voxels to [0, 1] with the chosen method; background becomes 0."""
    if method not in EQUALIZATION_METHODS:
        raise ValueError(f"unknown equalization {method!r}; choose one of {tuple(EQUALIZATION_METHODS)}")
    values = volume[mask]
    out = np.zeros_like(volume, dtype=np.float32)
    if values.size:
        out[mask] = EQUALIZATION_METHODS[method](values)
    return out


def coverage_problem(volume: np.ndarray, brain: np.ndarray) -> str | None:
    """Why ``volume`` does not cover the brain (one value on more than MAX_CONSTANT_FRACTION of it), or None."""
    values, counts = np.unique(volume[brain], return_counts=True)
    if not counts.size or counts.max() <= MAX_CONSTANT_FRACTION * counts.sum():
        return None
    value, fraction = values[counts.argmax()], counts.max() / counts.sum()
    return (f"covers only part of the brain: {fraction:.0%} of the brain mask holds the single value {value:g} "
            "(a truncated field of view or a blanked block); leave the scan out of the sample sheet")


def enhancement_mask(ce_t1: np.ndarray, t1: np.ndarray, delta: float) -> np.ndarray:
    """Rough enhancing-tissue mask of the local loss: CE-T1 - T1 > delta (paper: delta = 0.1), an absolute
    difference of equalized intensities (model-space units, :mod:`cesynth.preprocess.intensity`)."""
    return (ce_t1 - t1) > delta


def preprocess_scan(reference_path, input_paths: dict, brain_mask_path, settings: dict, reference_name="ce_t1",
                    tumour_mask_path=None, labels: dict | None = None):
    """Build the model-space stack of one scan.

    ``input_paths`` maps modality names to images already on the reference grid (co-registered).
    ``settings``: the ``preprocess`` config section (shape, equalization, enhancement_delta, antialias).
    ``labels``: {"tumour": labels, "enhancing": labels} when the tumour mask is a label map (None: a 0/1
    tumour mask, no enhancing-tumour channel). Raises ValueError naming the file whose image does not
    cover the brain. Returns (stack (C, Z, Y, X) float32, channel names, affine of the model grid).
    """
    shape, antialias = settings["shape"], settings.get("antialias", False)
    reference, ref_affine = canonical(reference_path)
    mask_native, _ = canonical(brain_mask_path)
    mask, affine = resize(mask_native, ref_affine, shape)
    mask = mask >= 0.5
    brain_native = mask_native >= 0.5

    channels, volumes = [], []
    # A reference that is also an input (prediction: reference t1) is one channel, not two.
    for name, path in {**input_paths, reference_name: reference_path}.items():
        volume = reference if path == reference_path else canonical(path)[0]
        if volume.shape != reference.shape:
            raise ValueError(f"{path}: grid {volume.shape} differs from the reference grid {reference.shape}; "
                             "co-register it first")
        problem = coverage_problem(volume, brain_native)
        if problem:
            raise ValueError(f"{name} ({path}) {problem}")
        resized, _ = resize(volume, ref_affine, shape, antialias=antialias)
        channels.append(name)
        volumes.append(equalize(resized, mask, settings["equalization"]))
    channels.append("brain_mask")
    volumes.append(mask.astype(np.float32))
    if reference_name != "t1" and "t1" in input_paths:
        channels.append("enhancement_mask")
        volumes.append(enhancement_mask(volumes[channels.index(reference_name)],
                                        volumes[channels.index("t1")], settings["enhancement_delta"]).astype(np.float32))
    if tumour_mask_path:
        label_map, _ = canonical(tumour_mask_path)
        regions = {"tumour_mask": (labels or {}).get("tumour")}
        if (labels or {}).get("enhancing"):
            regions["et_mask"] = labels["enhancing"]
        for channel, region_labels in regions.items():
            # a label map: the region = the listed labels, binarised before resampling
            region = np.isin(np.rint(label_map), region_labels).astype(np.float32) if region_labels else label_map
            channels.append(channel)
            volumes.append(((resize(region, ref_affine, shape)[0] >= 0.5) & mask).astype(np.float32))
    stack = np.stack([np.transpose(v, (2, 1, 0)) for v in volumes])  # (X,Y,Z) -> (Z,Y,X)
    return stack, channels, affine
