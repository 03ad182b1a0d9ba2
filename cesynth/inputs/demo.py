"""Built-in demo cohort: deterministic phantom heads that look like a brain-tumour MRI study.

Each phantom has scalp, skull, CSF, folded grey matter, white matter, ventricles, vessels that
enhance with contrast and (in most patients) a tumour with an enhancing rim, a necrotic core and
T2-bright oedema with ADC changes. Scans are rendered the way a scanner would see them:

* CE-T1 on a ~1 mm grid (the registration reference);
* T1 on the same grid, but the head moved slightly between the two acquisitions;
* T2, ADC and FLAIR as thick-slice axial series on grids of their own, with the head rotated and
  shifted by a few degrees/mm (partial-volume averaging across the slice thickness);
* Rician-like noise, a smooth multiplicative receive-coil bias field shared by the session's images
  (not on the computed ADC map), arbitrary scanner gains.

Some patients have a follow-up scan; a few scans carry an expert tumour mask (set B).
The scan table is a pure function of the configuration, so Snakemake knows every scan when
it builds the DAG, before any image is written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.ndimage import affine_transform
from scipy.spatial.transform import Rotation

from cesynth.io import save_nifti, write_table

MODALITIES = ("t1", "ce_t1", "t2", "adc", "flair")

# Tissue labels and their intensities per modality (before gain, bias and noise).
LABELS = ("air", "scalp", "skull", "csf", "gm", "wm", "ventricle", "vessel", "oedema", "rim", "core")
_INTENSITY = {
    #        air  scalp skull csf   gm    wm    vent  vessel oedema rim   core
    "t1":    [0.0, 0.90, 0.08, 0.20, 0.50, 0.70, 0.20, 0.45, 0.45, 0.50, 0.25],
    "ce_t1": [0.0, 0.92, 0.08, 0.20, 0.53, 0.70, 0.20, 1.00, 0.47, 0.95, 0.25],
    "t2":    [0.0, 0.55, 0.05, 1.00, 0.60, 0.42, 1.00, 0.08, 0.85, 0.60, 0.90],
    "adc":   [0.0, 0.05, 0.02, 1.00, 0.32, 0.28, 1.00, 0.30, 0.55, 0.22, 0.75],
    "flair": [0.0, 0.60, 0.05, 0.08, 0.55, 0.40, 0.08, 0.10, 0.90, 0.65, 0.50],
}
_L = {name: i for i, name in enumerate(LABELS)}

# Acquisition grids: voxel size (mm; coarsened to voxel_mm where that is coarser) and how far the head moves
# relative to the CE-T1.
_ACQUISITION = {
    "ce_t1": dict(voxel=None, max_deg=0.0, max_mm=0.0),
    "t1": dict(voxel=None, max_deg=2.0, max_mm=1.5),
    "t2": dict(voxel=(0.9, 0.9, 4.0), max_deg=4.0, max_mm=4.0),
    "adc": dict(voxel=(1.8, 1.8, 5.0), max_deg=4.0, max_mm=4.0),
    "flair": dict(voxel=(0.9, 0.9, 5.0), max_deg=4.0, max_mm=4.0),
}


@dataclass
class Tumour:
    centre: np.ndarray  # mm, anatomy coordinates
    radius: float       # mm, outer radius of the enhancing rim
    oedema: float       # mm of oedema beyond the rim


@dataclass
class Anatomy:
    brain_axes: np.ndarray  # ellipsoid semi-axes (x, y, z) in mm
    fold_phase: np.ndarray
    tumour: Tumour | None


def scan_table(demo_cfg: dict, out_dir) -> pd.DataFrame:
    """The demo cohort as a sample sheet, without writing anything.

    Columns: patient, scan, one path column per modality, tumour_mask (empty when none).
    """
    out_dir = Path(out_dir)
    has_tumour = _tumour_plan(demo_cfg)
    rows = []
    for i in range(demo_cfg["patients"]):
        patient = f"P{i + 1:02d}"
        for session in range(1 + (i < demo_cfg["followups"])):
            rows.append(dict(patient=patient, scan=f"{patient}s{session + 1}", has_tumour=bool(has_tumour[i])))
    table = pd.DataFrame(rows)
    # Expert masks go to the last scan of the last tumour patients, one scan per patient.
    tumour_patients = [p for p in table.patient.unique()[::-1] if table[table.patient == p].has_tumour.all()]
    expert_scans = {table[table.patient == p].scan.iloc[-1] for p in tumour_patients[: demo_cfg["expert_masks"]]}
    for mod in MODALITIES:
        table[mod] = [str(out_dir / s / f"{s}_{mod}.nii.gz") for s in table.scan]
    table["tumour_mask"] = [str(out_dir / s / f"{s}_tumour_mask.nii.gz") if s in expert_scans else ""
                            for s in table.scan]
    return table.drop(columns="has_tumour")


def write_cohort(demo_cfg: dict, out_dir, sheet_path) -> pd.DataFrame:
    """Render every scan of :func:`scan_table` and write the sample sheet (TSV)."""
    table = scan_table(demo_cfg, out_dir)
    has_tumour = _tumour_plan(demo_cfg)
    for patient_index, (patient, scans) in enumerate(table.groupby("patient", sort=True)):
        anatomy = _patient_anatomy(demo_cfg, patient_index, bool(has_tumour[patient_index]))
        for session, row in enumerate(scans.itertuples()):
            scan_rng = np.random.default_rng([demo_cfg["seed"], patient_index, session, 1])
            write_scan(_follow_up(anatomy, scan_rng) if session else anatomy, row, demo_cfg, scan_rng)
    # The sheet names files relative to itself, so the cohort can be moved or used as a sample sheet.
    sheet_dir = Path(sheet_path).parent
    portable = table.copy()
    for column in [*MODALITIES, "tumour_mask"]:
        portable[column] = [os.path.relpath(p, sheet_dir) if p else "" for p in table[column]]
    write_table(portable, sheet_path)
    return table


def _tumour_plan(cfg) -> np.ndarray:
    return np.random.default_rng(cfg["seed"]).random(cfg["patients"]) < cfg["tumour_fraction"]


def _patient_anatomy(cfg, patient_index, has_tumour) -> Anatomy:
    rng = np.random.default_rng([cfg["seed"], patient_index, 0])
    axes = np.array([60.0, 75.0, 55.0]) * cfg["head_scale"] * rng.uniform(0.95, 1.05, 3)
    tumour = None
    if has_tumour:
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        radius = rng.uniform(0.10, 0.16) * axes.mean()
        centre = direction * rng.uniform(0.2, 0.5) * axes
        tumour = Tumour(centre=centre, radius=radius, oedema=rng.uniform(0.3, 0.6) * radius)
    return Anatomy(brain_axes=axes, fold_phase=rng.uniform(0, 2 * np.pi, 2), tumour=tumour)


def _follow_up(anatomy: Anatomy, rng) -> Anatomy:
    if anatomy.tumour is None:
        return anatomy
    t = anatomy.tumour
    grown = Tumour(centre=t.centre, radius=t.radius * rng.uniform(0.8, 1.25), oedema=t.oedema)
    return Anatomy(anatomy.brain_axes, anatomy.fold_phase, grown)


def labels_at(anatomy: Anatomy, points: np.ndarray) -> np.ndarray:
    """Tissue label of each point (N, 3) given in anatomy coordinates (mm)."""
    a = anatomy.brain_axes
    r = np.sqrt(((points / a) ** 2).sum(axis=1))
    # Cortical folding: modulate the grey/white boundary with the direction of the point.
    theta = np.arctan2(points[:, 1], points[:, 0])
    phi = np.arccos(np.clip(points[:, 2] / np.maximum(np.linalg.norm(points, axis=1), 1e-6), -1, 1))
    fold = 0.05 * np.sin(7 * theta + anatomy.fold_phase[0]) * np.sin(6 * phi + anatomy.fold_phase[1])

    labels = np.full(len(points), _L["air"], dtype=np.int8)
    labels[r < 1.22] = _L["scalp"]
    labels[r < 1.14] = _L["skull"]
    labels[r < 1.06] = _L["csf"]
    labels[r < 1.0] = _L["gm"]
    labels[r < 0.86 + fold] = _L["wm"]
    for side in (-1, 1):
        centre = np.array([side * 0.14, 0.05, 0.12]) * a
        v = np.sqrt((((points - centre) / (np.array([0.08, 0.30, 0.14]) * a)) ** 2).sum(axis=1))
        labels[v < 1] = _L["ventricle"]
    brain = r < 1.0
    for p0, p1 in _vessel_segments(a):
        labels[(_distance_to_segment(points, p0, p1) < 1.6) & (r < 1.05)] = _L["vessel"]
    t = anatomy.tumour
    if t is not None:
        d = np.linalg.norm(points - t.centre, axis=1)
        labels[brain & (d < t.radius + t.oedema)] = _L["oedema"]
        labels[brain & (d < t.radius)] = _L["rim"]
        labels[brain & (d < 0.55 * t.radius)] = _L["core"]
    return labels


def _vessel_segments(axes):
    """Superior sagittal sinus along the midline and middle cerebral arteries to each side."""
    sss = (np.array([0.0, -0.85, 0.55]) * axes, np.array([0.0, 0.85, 0.55]) * axes)
    mca = [(np.array([0.05 * s, 0.1, -0.15]) * axes, np.array([0.75 * s, 0.15, 0.05]) * axes) for s in (-1, 1)]
    return [sss, *mca]


def _distance_to_segment(points, p0, p1):
    direction = p1 - p0
    t = np.clip(((points - p0) @ direction) / (direction @ direction), 0, 1)
    return np.linalg.norm(points - (p0 + t[:, None] * direction), axis=1)


def _random_pose(rng, max_deg, max_mm):
    rotation = Rotation.from_rotvec(np.deg2rad(rng.uniform(-max_deg, max_deg, 3))).as_matrix()
    return rotation, rng.uniform(-max_mm, max_mm, 3)


def _grid(anatomy, voxel, rng, flip_x=False):
    """A grid covering the head: (shape, affine), centred near the world origin."""
    extent = 2 * 1.3 * anatomy.brain_axes
    shape = np.ceil(extent / np.asarray(voxel)).astype(int)
    affine = np.diag([*voxel, 1.0])
    if flip_x:  # radiological (LAS) storage, as FSL writes it: the pipeline must not care
        affine[0, 0] = -voxel[0]
    affine[:3, 3] = -affine[:3, :3] @ ((shape - 1) / 2) + rng.uniform(-3, 3, 3)
    return tuple(shape), affine


class _Phantom:
    """Tissue labels rendered once on a fine grid in anatomy coordinates.

    Every acquisition is then a resampling of this label image through its own pose and grid,
    which is far cheaper than evaluating the geometry again for each modality.
    """

    def __init__(self, anatomy: Anatomy, voxel: float):
        half = np.ceil(1.3 * anatomy.brain_axes / voxel).astype(int)
        axes = [np.arange(-h, h + 1) * voxel for h in half]
        points = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
        self.labels = labels_at(anatomy, points).reshape([len(x) for x in axes])
        self.voxel = voxel
        self.origin = np.array([x[0] for x in axes])

    def sample(self, volume, shape, affine, pose, dz=0.0, order=1):
        """Values of ``volume`` (on the phantom grid) at the voxels of a grid with a moved head."""
        rotation, shift = pose
        # voxel (i,j,k+dz) -> world -> anatomy (inverse pose R^T (w - t)) -> phantom index: one affine map
        matrix = rotation.T @ affine[:3, :3] / self.voxel
        offset = (rotation.T @ (affine[:3, :3] @ [0, 0, dz] + affine[:3, 3] - shift) - self.origin) / self.voxel
        return affine_transform(volume, matrix, offset, output_shape=shape, order=order, mode="constant")

    def render(self, modality, shape, affine, pose, slice_samples):
        """Intensity image of one modality, averaging sub-slices for thick slices (partial volume)."""
        intensity = np.asarray(_INTENSITY[modality], dtype=np.float32)[self.labels]
        offsets = (np.arange(slice_samples) + 0.5) / slice_samples - 0.5
        return sum(self.sample(intensity, shape, affine, pose, dz) for dz in offsets) / len(offsets)


def _bias_field(shape, affine, coefficients, half_extent, strength=0.15):
    """Smooth multiplicative receive-coil bias of one session, defined in scanner coordinates (mm).

    The coil, not the sequence, makes the field: every image of a session sees the same field wherever
    its grid lies (so pre- and post-contrast T1 share it, as they do on a scanner).
    """
    index = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    x, y, z = ((sum(affine[r, k] * index[k] for k in range(3)) + affine[r, 3]) / half_extent for r in range(3))
    c = coefficients
    field = c[0] * x + c[1] * y + c[2] * z + c[3] * x * y + c[4] * z**2 + c[5] * x**2
    return np.exp(strength * field / np.abs(c).sum()).astype(np.float32)


def write_scan(anatomy: Anatomy, row, cfg, rng):
    voxel = float(cfg["voxel_mm"])
    phantom = _Phantom(anatomy, voxel)
    ref_shape, ref_affine = _grid(anatomy, (voxel,) * 3, rng, flip_x=True)
    coil = rng.normal(size=6)
    for modality in MODALITIES:
        acq = _ACQUISITION[modality]
        if acq["voxel"] is None:
            shape, affine, samples = ref_shape, ref_affine, 1
        else:
            vox = tuple(max(v, voxel) for v in acq["voxel"])  # clinical mm, never finer than the phantom
            shape, affine = _grid(anatomy, vox, rng)
            samples = 3
        pose = _random_pose(rng, acq["max_deg"], acq["max_mm"])
        image = phantom.render(modality, shape, affine, pose, samples)
        image *= (1 + rng.uniform(-0.03, 0.03, image.shape[2]))[None, None, :]  # slice-wise gain ripple
        if modality != "adc":
            image *= _bias_field(shape, affine, coil, 1.3 * anatomy.brain_axes.max())
        sigma = cfg["noise"] * 0.7
        image = np.sqrt((image + rng.normal(0, sigma, shape)) ** 2 + rng.normal(0, sigma, shape) ** 2)
        gain = 3000.0 if modality == "adc" else rng.uniform(600, 1400)  # ADC in 1e-6 mm^2/s
        save_nifti(image * gain, affine, getattr(row, modality), dtype=np.float32)
    if row.tumour_mask:
        tumour = np.isin(phantom.labels, [_L["rim"], _L["core"]]).astype(np.float32)
        mask = phantom.sample(tumour, ref_shape, ref_affine, (np.eye(3), np.zeros(3))) >= 0.5
        save_nifti(mask, ref_affine, row.tumour_mask, dtype=np.uint8)
