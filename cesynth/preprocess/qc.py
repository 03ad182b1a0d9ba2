"""Quality control of the per-scan preprocessing: panels and numbers that a person can check.

* :func:`scan_panel` draws one PNG per scan: the brain-mask outline over the reference (CE-T1), and
  every co-registered input with the reference's edges on top, each in three orthogonal slices
  through the brain's centre. Misregistration shows as edges that do not follow the input's anatomy;
  a bad mask as an outline that cuts brain or wanders into skull.
* :func:`scan_row` collects the numbers the coregister and skullstrip steps already write (mask
  volume, mutual information before/after per modality).
* :func:`flag_cohort` marks outliers: brain volume more than ``volume_tolerance`` from the cohort
  median, or a registration that did not raise mutual information.
"""

from __future__ import annotations


import matplotlib

matplotlib.use("Agg")  # headless: rules run without a display
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import ndimage  # noqa: E402

from cesynth.io import atomic_output, read_json, write_html_page  # noqa: E402

VIEWS = ("sagittal", "coronal", "axial")


def _canonical(path):
    img = nib.as_closest_canonical(nib.load(str(path)))
    return np.asarray(img.dataobj, dtype=np.float32), np.asarray(img.header.get_zooms()[:3], dtype=float)


def _slice(volume, view, index):
    """2-D slice in display orientation (superior/anterior up, patient right on the left)."""
    axis = VIEWS.index(view)
    plane = np.take(volume, index[axis], axis=axis)
    return np.rot90(plane)  # RAS arrays: rows become the last remaining axis, flipped so it points up


def _aspect(zooms, view):
    rows, cols = [a for a in range(3) if a != VIEWS.index(view)][::-1]
    return zooms[rows] / zooms[cols]


def _window(volume, mask=None):
    values = volume[mask] if mask is not None and mask.any() else volume[volume > 0]
    if values.size == 0:
        return 0.0, 1.0
    low, high = np.percentile(values, [1, 99.5])
    return float(low), float(max(high, low + 1e-6))


def _edges(volume, mask):
    """Strong edges of the reference inside the brain (top 15% gradient magnitude) plus the mask outline.

    Inside the brain they trace ventricles, sulci and lesions, which every sequence shows; scalp and
    orbital fat edges would dominate a whole-head threshold but say little about brain alignment.
    """
    if not mask.any():
        return np.zeros(volume.shape, dtype=bool)
    grad = ndimage.gaussian_gradient_magnitude(volume, 1.0)
    inner = ndimage.binary_erosion(mask, iterations=2)
    outline = mask & ~ndimage.binary_erosion(mask)
    return (inner & (grad > np.percentile(grad[inner], 85))) | outline if inner.any() else outline


def scan_panel(reference_path, mask_path, registered: dict, out_png, title=""):
    """One PNG: mask outline over the reference, then each registered input with reference edges.

    ``registered`` maps modality names to images on the reference grid. Slices go through the
    centre of mass of the mask.
    """
    ref, zooms = _canonical(reference_path)
    mask = _canonical(mask_path)[0] > 0.5
    centre = np.round(ndimage.center_of_mass(mask)).astype(int) if mask.any() else np.array(ref.shape) // 2
    edges = _edges(ref, mask)
    rows = [("reference + brain mask", ref, "mask")] + [(f"{m} + reference edges", _canonical(p)[0], "edges")
                                                        for m, p in registered.items()]
    fig, axes = plt.subplots(len(rows), 3, figsize=(9, 3 * len(rows)), squeeze=False)
    for r, (label, volume, overlay) in enumerate(rows):
        low, high = _window(volume, mask)
        for c, view in enumerate(VIEWS):
            ax = axes[r, c]
            aspect = _aspect(zooms, view)
            ax.imshow(_slice(volume, view, centre), cmap="gray", vmin=low, vmax=high, aspect=aspect,
                      interpolation="nearest")
            if overlay == "mask":
                ax.contour(_slice(mask.astype(float), view, centre), levels=[0.5], colors="red", linewidths=0.8)
            else:
                edge = _slice(edges, view, centre)
                ax.imshow(np.ma.masked_where(~edge, edge.astype(float)), cmap="autumn", alpha=0.5, aspect=aspect,
                          interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=9)
            if r == 0:
                ax.set_title(view, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_output(out_png) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def scan_row(scan, skullstrip_qc_path, coreg_qc_paths: dict) -> dict:
    """Numeric QC of one scan from the JSON files of the skullstrip and coregister rules."""
    mask_qc = read_json(skullstrip_qc_path)
    row = {"scan": scan, "brain_volume_ml": float(mask_qc["volume_ml"])}
    for mod, path in coreg_qc_paths.items():
        qc = read_json(path)
        for when in ("before", "after"):  # None (NaN here) for inputs kept on their grid: nothing was aligned
            value = qc[f"mutual_information_{when}"]
            row[f"{mod}_mi_{when}"] = float("nan") if value is None else float(value)
        row[f"{mod}_transform"] = qc.get("transform", "")
    return row


def flag_cohort(table: pd.DataFrame, volume_tolerance=0.25) -> pd.DataFrame:
    """Add ``volume_vs_median`` and a ``flags`` column (empty when the scan looks fine)."""
    out = table.copy()
    median = out["brain_volume_ml"].median()
    out["volume_vs_median"] = out["brain_volume_ml"] / median - 1.0
    flags = [[] for _ in range(len(out))]
    for i, dev in enumerate(out["volume_vs_median"]):
        if abs(dev) > volume_tolerance:
            flags[i].append(f"brain volume {dev:+.0%} vs median")
    for col in [c for c in out.columns if c.endswith("_mi_after")]:
        mod = col[: -len("_mi_after")]
        transforms = out.get(f"{mod}_transform", [""] * len(out))
        for i, (before, after, transform) in enumerate(zip(out[f"{mod}_mi_before"], out[col], transforms, strict=True)):
            if transform != "none" and not after > before:  # "none": kept on its grid, nothing to improve
                flags[i].append(f"{mod}: MI not improved")
    out["flags"] = ["; ".join(f) for f in flags]
    return out


def write_html(table: pd.DataFrame, path, title="Preprocessing QC"):
    """The cohort table as a standalone HTML page; flagged rows are highlighted."""
    def row_style(row):
        return ["background-color: #fdd" if row["flags"] else ""] * len(row)

    body = table.style.apply(row_style, axis=1).format(precision=3).hide(axis="index").to_html()
    flagged = int((table["flags"] != "").sum())
    write_html_page(path, title, body, intro=f"{len(table)} scans, {flagged} flagged.")
