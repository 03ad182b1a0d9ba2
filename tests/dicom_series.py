"""DICOM series written from NIfTI files with pydicom, as a scanner would export them: test fixtures.

Written independently of cesynth.inputs.dicom (rows along the second voxel axis, not reversed; int16 pixels),
so that reading them back through the pipeline tests the conversion, not a mirror of the writer.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

LPS = np.diag([-1.0, -1.0, 1.0])
STUDY = {"PatientName": "TCGA^FG6692", "PatientID": "TCGA-FG-6692", "PatientBirthDate": "19700101",
         "PatientSex": "F", "StudyDate": "20240102", "StudyTime": "101500", "StudyID": "1", "AccessionNumber": "A1",
         "ReferringPhysicianName": "", "StudyDescription": "BRAIN TUMOUR"}


def nifti_to_series(nifti, out_dir: Path, *, study_uid: str, frame_uid: str, series_number: int,
                    description: str) -> Path:
    """One DICOM file per slice of ``nifti`` (third voxel axis) in ``out_dir``; returns ``out_dir``."""
    img = nib.load(str(nifti))
    data = np.asarray(img.dataobj)
    # integer images as they are; float ones (the demo phantoms) as 12-bit values with a rescale slope
    slope = 1.0 if np.issubdtype(data.dtype, np.integer) else float(f"{max(data.max(), 1e-6) / 4000:.8g}")
    data = np.round(data / slope).astype(np.int16)
    axes = img.affine[:3, :3]
    spacing = np.linalg.norm(axes, axis=0)
    row, column = (LPS @ (axes[:, i] / spacing[i]) for i in (0, 1))
    series_uid = generate_uid()
    out_dir.mkdir(parents=True, exist_ok=True)
    for k in range(data.shape[2]):
        ds = pydicom.Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = MRImageStorage, generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
        for key, value in STUDY.items():
            setattr(ds, key, value)
        ds.StudyInstanceUID, ds.FrameOfReferenceUID, ds.SeriesInstanceUID = study_uid, frame_uid, series_uid
        ds.Modality, ds.SeriesNumber, ds.SeriesDescription, ds.InstanceNumber = "MR", series_number, description, k + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in LPS @ (img.affine @ [0, 0, k, 1])[:3]]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in [*row, *column]]
        ds.PixelSpacing = [f"{spacing[1]:.6f}", f"{spacing[0]:.6f}"]
        ds.SliceThickness = f"{spacing[2]:.6f}"
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = data.shape[1], data.shape[0]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = f"{slope:.8g}", "0"
        ds.PixelData = np.ascontiguousarray(data[:, :, k].T, dtype="<i2").tobytes()
        ds.save_as(out_dir / f"{description}_{k + 1:04d}.dcm", enforce_file_format=True)
    return out_dir


def patient_series(niftis: dict, root: Path) -> dict:
    """{modality: series folder} of one patient: one study and frame of reference, one series per modality."""
    study_uid, frame_uid = generate_uid(), generate_uid()
    return {m: nifti_to_series(path, root / m, study_uid=study_uid, frame_uid=frame_uid, series_number=i + 2,
                               description=m.upper())
            for i, (m, path) in enumerate(niftis.items())}
