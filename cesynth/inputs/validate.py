"""Checks of the sample sheet and of every input file, before any work is done.

Two levels, so that the DAG builds fast for large cohorts:

* :func:`check_sheet` looks only at the table (columns, ids, duplicates, sets). Snakemake runs it
  when it parses the workflow; it reads no image.
* :func:`check_files` opens every image of every scan (3-D, finite, not constant, plausible
  voxel size, masks binary - or holding only the configured labels - and on the reference grid). The ``validate_inputs`` rule runs it as
  the first job; every per-scan job depends on its report, so a bad file stops the run before work.

Each problem is a :class:`Problem` naming the scan, the file and what is wrong; all problems are
reported together, one line each.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np

if TYPE_CHECKING:  # annotations only: a per-scan job (skull strip "none") does without pandas' import
    import pandas as pd

SAFE_ID = re.compile(r"^[A-Za-z0-9._-]+$")
VOXEL_MM_RANGE = (0.1, 10.0)
# Optional per-scan columns of the sample table: column -> (the setting of that config section it overrides
# for this scan, allowed values); empty = the configured one. E.g. a cohort mixing raw scans with already
# skull-stripped, co-registered ones (config/real/samples.tsv; docs/inputs.md).
SCAN_OPTIONS = {"skullstrip": ("backend", ("auto", "fsl", "python", "none")),
                "registration": ("transform", ("rigid", "affine", "none"))}


@dataclass(frozen=True)
class Problem:
    scan: str
    file: str
    problem: str

    def __str__(self):
        where = f" ({self.file})" if self.file else ""
        return f"scan {self.scan}{where}: {self.problem}"


class InputError(ValueError):
    """Raised with every problem found, one per line."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s) in the input scans:\n" + "\n".join(f"  - {p}" for p in problems))


def check_sheet(table: pd.DataFrame, modalities: list[str], check_exists=True) -> list[Problem]:
    """Problems visible in the table itself (and, optionally, missing files)."""
    missing_columns = [c for c in ["patient", "scan", *modalities] if c not in table.columns]
    if missing_columns:
        return [Problem("*", "", f"sample sheet lacks column(s) {missing_columns}; it has {list(table.columns)}")]
    problems = []
    for column in ("patient", "scan"):
        for value in table[column].astype(str):
            if not SAFE_ID.match(value):
                problems.append(Problem(value, "", f"{column} id {value!r} may only contain letters, digits, "
                                                   "'.', '_' and '-' (it becomes part of file names and commands)"))
    for scan in table.scan[table.scan.duplicated()].unique():
        problems.append(Problem(scan, "", "scan id appears more than once in the sample sheet"))
    for column, (key, allowed) in SCAN_OPTIONS.items():
        for scan, value in zip(table.scan, table.get(column, [""] * len(table)), strict=True):
            if _path_value(value) not in ("", *allowed):
                problems.append(Problem(scan, "", f"{column} {value!r} is not one of {allowed} (the {column}.{key} "
                                                  "of this scan; empty = the configured one)"))
    if check_exists:
        for row in table.itertuples(index=False):
            for column in [*modalities, "tumour_mask"]:
                path = _path(row, column)
                # an image may be a folder holding a DICOM series (cesynth.inputs.dicom); a mask is a file
                if path and not (Path(path).is_file() or column != "tumour_mask" and Path(path).is_dir()):
                    problems.append(Problem(row.scan, path, f"{column} file does not exist"))
    return problems


def check_files(table: pd.DataFrame, modalities: list[str], reference: str, mask_labels=None) -> list[Problem]:
    """Open every image and report what would break or silently spoil training.

    ``mask_labels``: tumour masks are label maps and these labels are tumour (None: masks are 0/1).
    """
    problems = []
    for row in table.itertuples(index=False):
        ref_shape = ref_affine = None
        for column in modalities:
            path = _path(row, column)
            if Path(path).is_dir():  # a DICOM series: checked and converted by its own jobs (cesynth.inputs.dicom)
                continue
            img, problem = _open(path)
            if problem:
                problems.append(Problem(row.scan, path, f"{column}: {problem}"))
                continue
            problems += [Problem(row.scan, path, f"{column}: {p}") for p in _image_problems(img)]
            if column == reference:
                ref_shape, ref_affine = img.shape, img.affine
        mask_path = _path(row, "tumour_mask")
        if mask_path:
            img, problem = _open(mask_path)
            if problem:
                problems.append(Problem(row.scan, mask_path, f"tumour_mask: {problem}"))
            else:
                problems += [Problem(row.scan, mask_path, f"tumour_mask: {p}")
                             for p in _mask_problems(img, ref_shape, ref_affine, mask_labels)]
    return problems


def _path(row, column) -> str:
    return _path_value(getattr(row, column, ""))


def _path_value(value) -> str:
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value).strip()


def scan_settings(config: dict, sample, section: str) -> dict:
    """``config[section]`` with this scan's own value of the :data:`SCAN_OPTIONS` column, if it has one."""
    key, _ = SCAN_OPTIONS[section]
    return {**config[section], key: _path_value(sample.get(section)) or config[section][key]}


def _open(path):
    if not Path(path).is_file():
        return None, "file does not exist"
    try:
        img = nib.load(path)
        img.get_fdata(dtype=np.float32)  # decompress fully: a truncated .gz fails only here
    except Exception as error:  # nibabel raises many types for corrupt files
        return None, f"cannot be read as NIfTI ({type(error).__name__}: {error})"
    return img, None


def _image_problems(img) -> list[str]:
    problems = []
    shape = img.shape
    if len(shape) != 3 and not (len(shape) == 4 and shape[3] == 1):
        return [f"image must be 3-D, but has shape {shape}"]
    data = np.asarray(img.dataobj, dtype=np.float32)
    n_bad = int((~np.isfinite(data)).sum())
    if n_bad:
        problems.append(f"{n_bad} voxel(s) are NaN or infinite")
    finite = data[np.isfinite(data)]
    if finite.size == 0 or finite.min() == finite.max():
        problems.append("image is empty or constant")
    zooms = img.header.get_zooms()[:3]
    if not all(VOXEL_MM_RANGE[0] <= z <= VOXEL_MM_RANGE[1] for z in zooms):
        problems.append(f"implausible voxel size {tuple(round(float(z), 3) for z in zooms)} mm "
                        f"(expected {VOXEL_MM_RANGE[0]}-{VOXEL_MM_RANGE[1]} mm)")
    return problems


def _mask_problems(img, ref_shape, ref_affine, labels=None) -> list[str]:
    problems = []
    values = np.unique(np.asarray(img.dataobj))
    # a label map may hold labels that are not tumour (BraTS oedema); it must hold labels, though
    unexpected = values[(values < 0) | (values != np.round(values))] if labels else values[~np.isin(values, [0, 1])]
    if unexpected.size:
        shown = ", ".join(f"{v:g}" for v in unexpected[:5]) + (", ..." if unexpected.size > 5 else "")
        problems.append(f"label map holds values {{{shown}}} that are not labels (integers >= 0)" if labels else
                        f"mask is not binary (values {{{shown}}} besides 0 and 1); for a label map (e.g. BraTS "
                        "labels 1, 2, 4) set input.tumour_mask_labels")
    if ref_shape is not None and (img.shape[:3] != ref_shape[:3] or not np.allclose(img.affine, ref_affine, atol=1e-3)):
        problems.append("mask is not on the reference image's grid (shape or affine differ)")
    return problems
