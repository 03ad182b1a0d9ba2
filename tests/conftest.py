"""Shared fixtures: small real images and preprocessed stacks made on the fly."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from cesynth.io import save_stack

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
TCGA = SHARED / "data" / "tcga-fg-6692"


def make_stack(path: Path, seed: int, shape=(12, 32, 32), tumour=False):
    """A synthetic preprocessed scan (Z, Y, X) whose CE-T1 is a learnable function of T1 and T2."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    brain = (x**2 + y**2 + (z / 1.2) ** 2) < 0.8
    t1 = np.clip(0.5 + 0.2 * np.sin(3 * x + seed) + 0.05 * rng.normal(size=shape), 0, 1) * brain
    t2 = np.clip(0.5 + 0.3 * np.cos(4 * y - seed), 0, 1) * brain
    adc = np.clip(0.4 + 0.2 * x * y, 0, 1) * brain
    lesion = ((x - 0.2) ** 2 + (y + 0.1) ** 2 + z**2) < 0.08
    ce = np.clip(t1 + 0.4 * lesion * t2, 0, 1) * brain
    channels = {"t1": t1, "t2": t2, "adc": adc, "ce_t1": ce, "brain_mask": brain,
                "enhancement_mask": (ce - t1) > 0.1}
    if tumour:
        channels["tumour_mask"] = lesion & brain
    stack = np.stack([np.asarray(v, dtype=np.float32) for v in channels.values()])
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    save_stack(stack, list(channels), affine, path, path.with_suffix(".json"))
    return path


@pytest.fixture
def stacks(tmp_path):
    return [make_stack(tmp_path / f"S{i}_desc-preproc.npy", seed=i, tumour=(i == 3)) for i in range(4)]


def nan_copy(path, out) -> str:
    """A copy of a NIfTI image with one NaN voxel (a typical silently broken export)."""
    import nibabel as nib

    img = nib.load(str(path))
    data = img.get_fdata()
    data[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(data, img.affine), str(out))
    return str(out)


def small_image(path, seed=0, shape=(8, 8, 8)) -> str:
    """A small valid NIfTI scan (3-D, finite, not constant, 1 mm voxels): it passes every check of the inputs."""
    import nibabel as nib

    data = np.random.default_rng(seed).random(shape).astype(np.float32)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    return str(path)


def predict_sheet(folder: Path, scans: int = 1, modalities=("t1", "t2", "adc")) -> Path:
    """A predict sample sheet of ``scans`` new patients (one scan each) with small valid images, in ``folder``."""
    rows = ["\t".join(["patient", "scan", *modalities])]
    for i in range(scans):
        paths = [small_image(folder / f"N{i}" / f"{m}.nii.gz", seed=10 * i + j) for j, m in enumerate(modalities)]
        rows.append("\t".join([f"N{i}", f"N{i}_1", *paths]))
    sheet = folder / "new_patients.tsv"
    sheet.write_text("\n".join(rows) + "\n")
    return sheet


def viewer_config(text: str) -> dict:
    """The configuration (panes, shown, labels, ...) that a viewer page (cesynth.evaluate.viewer) carries."""
    return json.loads(re.search(r'<script type="application/json" id="config">(.*?)</script>', text).group(1))
