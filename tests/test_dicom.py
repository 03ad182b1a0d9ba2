"""DICOM series folders in (header checks, dcm2niix through nipype) and a DICOM series out, on small volumes."""

import shutil

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import BasicTextSRStorage, ExplicitVRLittleEndian, generate_uid

from cesynth.inputs.dicom import check_scan_series, convert_series, new_study_attributes, series_problems, write_series
from cesynth.inputs.validate import InputError
from dicom_series import nifti_to_series


def oblique_affine():
    angle = np.deg2rad(12)
    rotation = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([-0.9, 1.1, 3.0])
    affine[:3, 3] = [40.0, -60.0, -20.0]
    return affine


@pytest.fixture
def series(tmp_path):
    data = (np.random.default_rng(0).random((20, 16, 8)) * 1000).astype(np.int16)
    nib.save(nib.Nifti1Image(data, oblique_affine()), tmp_path / "t1.nii.gz")
    return nifti_to_series(tmp_path / "t1.nii.gz", tmp_path / "t1", study_uid=generate_uid(), frame_uid=generate_uid(),
                           series_number=2, description="T1")


def sr_document(path):
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = BasicTextSRStorage, generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = BasicTextSRStorage, ds.file_meta.MediaStorageSOPInstanceUID, "SR"
    ds.save_as(path, enforce_file_format=True)


def test_one_series_passes_and_converts_with_its_bids_sidecar(series, tmp_path):
    (series / "README.txt").write_text("exported by a PACS")  # not DICOM: skipped, like dcm2niix does
    assert series_problems(series) == []
    assert check_scan_series("P1", "S1", {"t1": str(series)}) == {"t1": 8}
    convert_series(series, tmp_path / "out.nii.gz", tmp_path / "out.json", patient="P1", scan="S1", column="t1")
    original, converted = (nib.as_closest_canonical(nib.load(tmp_path / name)) for name in ("t1.nii.gz", "out.nii.gz"))
    np.testing.assert_allclose(converted.affine, original.affine, atol=0.01)
    np.testing.assert_array_equal(converted.get_fdata(), original.get_fdata())
    assert '"SeriesDescription": "T1"' in (tmp_path / "out.json").read_text()


@pytest.mark.parametrize("damage, problem", [
    ("localizer", "holds a localizer (1 image(s) with ImageType LOCALIZER"),
    ("report", "holds non-image DICOM objects (Basic Text SR Storage)"),
    ("repeat", "holds 1 image(s) at a position already taken"),
    ("missing", "missing slice(s): about 2 missing between slice positions"),
    ("empty", "holds no DICOM file"),
])
def test_each_broken_series_folder_is_named_with_its_problem(series, damage, problem):
    files = sorted(series.iterdir())
    if damage == "localizer":
        ds = pydicom.dcmread(files[0])
        ds.ImageType, ds.SOPInstanceUID = ["ORIGINAL", "PRIMARY", "LOCALIZER"], generate_uid()
        ds.save_as(series / "localizer.dcm")
    elif damage == "report":
        sr_document(series / "report.dcm")
    elif damage == "repeat":
        shutil.copy(files[3], series / "copy.dcm")
    elif damage == "missing":
        files[4].unlink()
        files[5].unlink()
    else:
        for f in files:
            f.unlink()
    assert [p[:len(problem)] for p in series_problems(series)] == [problem]
    with pytest.raises(InputError) as refused:
        check_scan_series("P1", "S1", {"t1": str(series)})
    [line] = [str(p) for p in refused.value.problems]
    assert line.startswith(f"scan S1 ({series}): patient P1: t1 DICOM series folder {problem}")


def test_synthetic_series_reads_back_on_the_same_grid(tmp_path):
    volume = np.random.default_rng(1).random((20, 16, 8))
    out = tmp_path / "synth"
    info = write_series(volume, oblique_affine(), out, new_study_attributes("P1"), "SYNTHETIC CE-T1 test",
                        "not acquired")
    assert info["files"] == 8 and sorted(p.name for p in out.iterdir())[0] == "IM00001.dcm"
    convert_series(out, tmp_path / "back.nii.gz", tmp_path / "back.json", patient="P1", scan="S1", column="synth")
    back = nib.as_closest_canonical(nib.load(tmp_path / "back.nii.gz"))
    written = nib.as_closest_canonical(nib.Nifti1Image(volume.astype(np.float32), oblique_affine()))
    np.testing.assert_allclose(back.affine, written.affine, atol=0.01)
    assert np.abs(back.get_fdata() - written.get_fdata()).max() <= info["RescaleSlope"] / 2 * 1.001 + 1e-6
    ds = pydicom.dcmread(next(out.iterdir()))
    assert ds.PatientID == "P1" and list(ds.ImageType) == ["DERIVED", "SECONDARY"] and ds.BitsStored == 12
    with pytest.raises(OSError):  # never mixed into an existing series; the partial one is removed
        write_series(volume, oblique_affine(), out, new_study_attributes("P1"), "again", "")
    assert not list(tmp_path.glob(".synth.*")) and len(list(out.iterdir())) == 8
