"""DICOM in and out: series folders of a sample sheet to NIfTI (dcm2niix), and the synthesis as a DICOM series.

Input: a sample sheet may name, per modality, a folder holding one DICOM series instead of a NIfTI
file. :func:`series_problems` reads the headers (pydicom) and names what would make a wrong volume:
several series in one folder, a localizer, non-image objects (reports, presentation states), images
at repeated positions or a gap where a slice is missing. :func:`convert_series` then runs dcm2niix
(the PyPI wheel ships the binary) through nipype's ``Dcm2niix`` interface and keeps its BIDS JSON
sidecar beside the image.

Output: :func:`write_series` writes a volume on its NIfTI grid as a DICOM MR series (one file per
slice, 16-bit integers with rescale slope), a new series in the T1's study and frame of reference
(:func:`source_attributes`), marked DERIVED\\SECONDARY and SYNTHETIC.
"""

from __future__ import annotations

import datetime
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.valuerep import DSfloat
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, PYDICOM_IMPLEMENTATION_UID, generate_uid

from cesynth.inputs.validate import InputError, Problem
from cesynth.io import atomic_output

_HEADER_TAGS = ["SOPClassUID", "SeriesInstanceUID", "SeriesDescription", "SeriesNumber", "ImageType",
                "ImagePositionPatient", "ImageOrientationPatient", "NumberOfFrames", "Rows", "Columns"]
# Patient and study modules of the source series, copied into the synthetic series so that it files
# under the same patient and study in a PACS.
STUDY_ATTRIBUTES = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge", "StudyInstanceUID",
                    "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName",
                    "StudyDescription", "FrameOfReferenceUID", "PositionReferenceIndicator")
_LPS = np.diag([-1.0, -1.0, 1.0])  # NIfTI world (RAS) <-> DICOM patient coordinates (LPS)
STORED_MAX = 4095  # 12-bit values, what MR viewers expect


def is_series_folder(value) -> bool:
    return bool(value) and Path(str(value)).is_dir()


def series_folders(table: pd.DataFrame, columns) -> dict[str, dict[str, str]]:
    """{scan: {column: folder}} for every sheet cell of ``columns`` that names a folder (a DICOM series)."""
    found = {}
    for row in table.to_dict("records"):
        folders = {c: str(row[c]) for c in columns if is_series_folder(row.get(c))}
        if folders:
            found[row["scan"]] = folders
    return found


def with_converted_paths(table: pd.DataFrame, folders: dict, converted) -> pd.DataFrame:
    """``table`` with each DICOM folder replaced by ``converted(scan, column)``, the NIfTI its conversion writes."""
    table = table.copy()
    for scan, by_column in folders.items():
        for column in by_column:
            table.loc[table.scan == scan, column] = converted(scan, column)
    return table


def _headers(folder: Path) -> list[tuple[Path, pydicom.Dataset]]:
    headers = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            headers.append((path, pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)))
        except pydicom.errors.InvalidDicomError:
            continue  # not DICOM (a DICOMDIR's README, .DS_Store): dcm2niix skips it too
    return headers


def series_problems(folder) -> list[str]:
    """What keeps ``folder`` from being one 3-D image series; empty when it is one."""
    headers = _headers(Path(folder))
    if not headers:
        return ["holds no DICOM file"]
    non_images = sorted({_sop_name(ds) for _, ds in headers if "Image Storage" not in _sop_name(ds)})
    if non_images:
        return [f"holds non-image DICOM objects ({', '.join(non_images)}); keep only the image series in the folder"]
    series = pd.Series([str(ds.get("SeriesInstanceUID", "")) for _, ds in headers])
    if series.nunique() > 1:
        described = [f"{uid} ({_description(headers, series, uid)}, {n} files)"
                     for uid, n in series.value_counts().items()]
        return [f"holds {series.nunique()} series: {'; '.join(described)}; give one series per folder"]
    localizers = [p.name for p, ds in headers if "LOCALIZER" in [str(v).upper() for v in ds.get("ImageType", [])]]
    if localizers:
        return [f"holds a localizer ({len(localizers)} image(s) with ImageType LOCALIZER, e.g. {localizers[0]}); "
                "remove it"]
    if len(headers) == 1 and int(headers[0][1].get("NumberOfFrames", 1) or 1) > 1:
        return []  # one enhanced (multi-frame) object: dcm2niix reads its per-frame geometry
    return _geometry_problems(headers)


def _sop_name(ds) -> str:
    uid = ds.get("SOPClassUID")
    return uid.name if uid is not None else "no SOP class"


def _description(headers, series, uid) -> str:
    ds = headers[int(np.flatnonzero(series == uid)[0])][1]
    return str(ds.get("SeriesDescription", "")) or "no description"


def _geometry_problems(headers) -> list[str]:
    """Orientation, repeated and missing slices, from positions along the slice normal."""
    orientations = {tuple(np.round(np.asarray(ds.ImageOrientationPatient, float), 3)) for _, ds in headers
                    if "ImageOrientationPatient" in ds}
    if len(orientations) != 1 or any("ImagePositionPatient" not in ds for _, ds in headers):
        return [f"images in {len(orientations)} orientations or without position: a localizer or a mixed series; "
                "keep one 3-D series"]
    row, column = np.reshape(next(iter(orientations)), (2, 3))
    normal = np.cross(row, column)
    positions = np.sort([float(np.dot(normal, np.asarray(ds.ImagePositionPatient, float))) for _, ds in headers])
    if len(positions) < 3:
        return [f"holds {len(positions)} slice(s); a 3-D series needs at least 3"]
    steps = np.diff(positions)
    if (steps < 1e-3).any():
        return [f"holds {int((steps < 1e-3).sum())} image(s) at a position already taken (several volumes, echoes "
                "or repeats in one folder); keep one 3-D series"]
    spacing = float(np.median(steps))
    gaps = np.flatnonzero(steps > 1.5 * spacing)
    if gaps.size:
        i = gaps[0]
        missing = int(round(steps[i] / spacing)) - 1
        return [f"missing slice(s): about {missing} missing between slice positions {positions[i]:.2f} and "
                f"{positions[i + 1]:.2f} mm (slices {spacing:.2f} mm apart), {gaps.size} gap(s) in all"]
    return []


def check_scan_series(patient: str, scan: str, folders: dict) -> dict:
    """Refuse (:class:`InputError`, one line per folder) any of a scan's series folders that is not one 3-D series;
    returns {column: number of DICOM files}."""
    problems = [Problem(scan, folder, f"patient {patient}: {column} DICOM series folder {problem}")
                for column, folder in folders.items() for problem in series_problems(folder)]
    if problems:
        raise InputError(problems)
    return {column: len(_headers(Path(folder))) for column, folder in folders.items()}


def dcm2niix_interface(folder, output_dir):
    """nipype's ``Dcm2niix`` for one series folder: gzipped NIfTI and an anonymised BIDS sidecar named image.*."""
    os.environ.setdefault("NIPYPE_NO_ET", "1")  # no version check over the network
    import dcm2niix
    from nipype.interfaces.dcm2nii import Dcm2niix

    converter = Dcm2niix(source_dir=str(Path(folder).resolve()), output_dir=str(output_dir), out_filename="image",
                         compress="y", bids_format=True, anon_bids=True, merge_imgs=False, terminal_output="allatonce")
    # the wheel's binary, whether or not the environment's bin folder is on PATH (a venv used without activating)
    converter.inputs.environ = {"PATH": os.pathsep.join([str(Path(dcm2niix.bin).parent), os.environ.get("PATH", "")])}
    return converter


def convert_series(folder, out_image, out_sidecar, *, patient: str, scan: str, column: str) -> None:
    """One series folder to ``out_image`` (.nii.gz) and its dcm2niix BIDS sidecar ``out_sidecar`` (.json)."""
    with tempfile.TemporaryDirectory(prefix="cesynth_dcm2niix_") as work:
        dcm2niix_interface(folder, work).run(cwd=work)
        images = sorted(Path(work).glob("*.nii.gz"))
        if len(images) != 1:
            raise InputError([Problem(scan, str(folder), f"patient {patient}: {column} DICOM series folder: dcm2niix "
                                      f"made {len(images)} images ({', '.join(p.name for p in images)}), not one")])
        with atomic_output(out_sidecar) as tmp:
            shutil.copyfile(images[0].with_name(images[0].name.replace(".nii.gz", ".json")), tmp)
        with atomic_output(out_image) as tmp:
            shutil.copyfile(images[0], tmp)


def source_attributes(folder) -> dict:
    """Patient, study and frame-of-reference attributes (and the series number) of a series folder's first image."""
    path = _headers(Path(folder))[0][0]
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    attributes = {k: ds.get(k) for k in STUDY_ATTRIBUTES if ds.get(k) not in (None, "")}
    attributes["SeriesNumber"] = int(ds.get("SeriesNumber") or 0)
    return attributes


def new_study_attributes(patient: str) -> dict:
    """Attributes of a new study for a patient whose T1 came as NIfTI (no DICOM study to file under)."""
    return {"PatientName": patient, "PatientID": patient, "StudyInstanceUID": generate_uid(),
            "FrameOfReferenceUID": generate_uid(), "SeriesNumber": 0}


def slice_geometry(affine: np.ndarray, shape) -> dict:
    """DICOM geometry of the slices (third voxel axis) of a NIfTI grid: columns along the first voxel axis,
    rows along the second reversed (DICOM rows run top-down: an axial RAS image shows anterior at the top)."""
    axes = affine[:3, :3]
    spacing = np.linalg.norm(axes, axis=0)
    unit = axes / spacing
    if not np.allclose(unit.T @ unit, np.eye(3), atol=1e-4):
        raise ValueError("the image grid is sheared; DICOM slices need orthogonal axes")
    first = affine @ np.array([0, shape[1] - 1, 0, 1.0])
    return {"row_cosine": _LPS @ unit[:, 0], "column_cosine": -(_LPS @ unit[:, 1]),
            "origin": _LPS @ first[:3], "step": _LPS @ axes[:, 2], "pixel_spacing": [spacing[1], spacing[0]],
            "thickness": float(spacing[2])}


def write_series(volume, affine, out_dir, attributes: dict, description: str, comments: str) -> dict:
    """Write ``volume`` (x, y, z on the grid ``affine``) as a new DICOM MR series in ``out_dir`` (created whole).

    ``attributes``: :func:`source_attributes` or :func:`new_study_attributes`. Values are stored as
    12-bit integers with one RescaleSlope for the series. Returns the series' UID, slope and file count.
    """
    volume = np.asarray(volume, dtype=np.float64)
    if volume.min() < 0:
        raise ValueError("write_series stores values >= 0 (a synthetic CE-T1 in [0, 1])")
    slope = float(f"{max(float(volume.max()), 1e-6) / STORED_MAX:.10g}")  # exactly what the DS string holds
    stored = np.clip(np.round(volume / slope), 0, STORED_MAX).astype(np.uint16)
    geometry = slice_geometry(np.asarray(affine, float), volume.shape)
    series = {"SeriesInstanceUID": generate_uid(), "SeriesNumber": int(attributes.get("SeriesNumber") or 0) + 1000,
              "SeriesDescription": description[:64], "ImageComments": comments[:10240], "RescaleSlope": slope}
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        for k in range(volume.shape[2]):
            pixels = stored[:, ::-1, k].T  # rows: second voxel axis reversed (slice_geometry)
            _slice_dataset(pixels, k, geometry, attributes, series).save_as(work / f"IM{k + 1:05d}.dcm",
                                                                            enforce_file_format=True)
        os.replace(work, out_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return {"SeriesInstanceUID": series["SeriesInstanceUID"], "RescaleSlope": slope, "files": volume.shape[2]}


def _slice_dataset(pixels, k, geometry, attributes, series) -> pydicom.Dataset:
    """One slice of the synthetic series: an MR image of the source study, DERIVED\\SECONDARY."""
    now = datetime.datetime.now()
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
    for key, value in attributes.items():
        if key != "SeriesNumber":
            setattr(ds, key, value)
    ds.Modality, ds.Manufacturer, ds.BurnedInAnnotation = "MR", "cesynth", "NO"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.DerivationDescription = "synthesized by a neural network from non-contrast MR series; not acquired"
    ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.SeriesDate, ds.SeriesTime = ds.ContentDate, ds.ContentTime
    ds.ScanningSequence, ds.SequenceVariant, ds.MRAcquisitionType = "RM", "NONE", "3D"  # RM: research mode
    ds.ScanOptions = ds.EchoTime = ds.EchoTrainLength = ds.RepetitionTime = ""  # type 2: unknown, not acquired
    for key in ("SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "ImageComments", "RescaleSlope"):
        setattr(ds, key, series[key])
    ds.RescaleIntercept, ds.RescaleType = 0, "US"
    ds.InstanceNumber = k + 1
    position = geometry["origin"] + k * geometry["step"]
    ds.ImagePositionPatient = _ds(position)
    ds.ImageOrientationPatient = _ds([*geometry["row_cosine"], *geometry["column_cosine"]])
    ds.SliceLocation = _ds(np.dot(np.cross(geometry["row_cosine"], geometry["column_cosine"]), position))
    ds.PixelSpacing = _ds(geometry["pixel_spacing"])
    ds.SliceThickness = ds.SpacingBetweenSlices = _ds(geometry["thickness"])
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    full_range = STORED_MAX * series["RescaleSlope"]
    ds.WindowCenter, ds.WindowWidth = _ds(full_range / 2), _ds(full_range)
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    return ds


def _ds(values):
    """Decimal strings (DS) of at most 16 characters, as the standard allows."""
    if np.ndim(values):
        return [DSfloat(float(v), auto_format=True) for v in values]
    return DSfloat(float(values), auto_format=True)
