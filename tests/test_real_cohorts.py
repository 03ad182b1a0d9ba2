"""Already preprocessed cohorts (BraTS, UCSF-PDGM): skull stripping and registration 'none', the BraTS
layouts, and per-scan settings, on the real cases of ../shared/data."""

import os

import ants
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from cesynth.inputs import sources
from cesynth.inputs.cohort import load_samples, tumour_mask_labels
from cesynth.inputs.validate import InputError, check_sheet, scan_settings
from cesynth.preprocess.preprocessing import preprocess_scan
from cesynth.preprocess.registration import keep_on_grid
from cesynth.preprocess.skullstrip import SkullStripSettings, _head_mask, brain_mask
from conftest import SHARED, TCGA
from test_workflow import snakemake

BRATS = SHARED / "data" / "brats-gli-00001-000"   # BraTS 2023 case, t1n/t1c/t2w/t2f renamed t1/t1c/t2/flair
DU7294 = SHARED / "data" / "tcga-du-7294"          # TCGA case in BraTS form (SRI24, skull-stripped)
pytestmark = pytest.mark.skipif(not (BRATS / "t1c.nii.gz").is_file() or not (TCGA / "t1c.nii.gz").is_file(),
                                reason="real cases of ../shared/data not available")
SHARED_NAMES = {"t1": "t1", "ce_t1": "t1c", "t2": "t2", "flair": "flair"}


def dice(a, b):
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def test_backend_none_keeps_the_brain_of_a_stripped_case(tmp_path):
    for case in (BRATS, DU7294):
        out = tmp_path / f"{case.name}_mask.nii.gz"
        qc = brain_mask(case / "t1c.nii.gz", out, SkullStripSettings(backend="none"), scan=case.name)
        mask = nib.load(out).get_fdata() > 0
        nonzero = nib.load(case / "t1c.nii.gz").get_fdata() != 0
        assert qc["backend"] == "none" and dice(mask, nonzero) >= 0.99
        assert 1000 < qc["volume_ml"] < 1800  # all of the brain, not the 30-45% less of a second BET


def test_backend_none_refuses_a_whole_head(tmp_path):
    # the raw clinical case: background noise, the whole field of view is nonzero
    with pytest.raises(InputError, match=r"scan FG6692 \(.*t1c.nii.gz\): looks like a whole head.*ml of nonzero"):
        brain_mask(TCGA / "t1c.nii.gz", tmp_path / "m.nii.gz", SkullStripSettings(backend="none"), scan="FG6692")
    # the same head with its background zeroed: a small field of view (26 slices) passes the volume test but
    # not the bright scalp rim
    img = nib.load(TCGA / "t1c.nii.gz")
    data = img.get_fdata()
    head = np.where(_head_mask(data), data, 0)
    keep = np.zeros(head.shape, bool)
    keep[:, :, 8:18] = True  # 10 slices of 5.5 mm: under the volume limit
    nib.save(nib.Nifti1Image(np.where(keep, head, 0).astype(np.float32), img.affine), tmp_path / "head.nii.gz")
    with pytest.raises(InputError, match=r"scan H1 .*looks like a whole head.*brighter than the interior"):
        brain_mask(tmp_path / "head.nii.gz", tmp_path / "m.nii.gz", SkullStripSettings(backend="none"), scan="H1")
    assert not (tmp_path / "m.nii.gz").exists()


def test_transform_none_checks_the_grid_and_writes_an_identity(tmp_path):
    image, transform = tmp_path / "t2_on_ref.nii.gz", tmp_path / "t2.mat"
    qc = keep_on_grid("B1", BRATS / "t2.nii.gz", BRATS / "t1c.nii.gz", image, transform)
    assert qc["transform"] == "none" and qc["mutual_information_after"] == qc["mutual_information_before"]
    original = nib.load(BRATS / "t2.nii.gz")
    kept = nib.load(image)
    assert np.allclose(kept.affine, original.affine, atol=1e-4)
    assert np.allclose(kept.get_fdata(), original.get_fdata(), atol=1e-3)
    # the identity .mat works wherever a registration's transform is used
    fixed, moving = ants.image_read(str(BRATS / "t1c.nii.gz")), ants.image_read(str(BRATS / "t2.nii.gz"))
    applied = ants.apply_transforms(fixed, moving, [str(transform)]).numpy()
    assert np.allclose(applied, original.get_fdata(), atol=1e-3)

    with pytest.raises(InputError, match=r"scan FG6692 \(.*t2.nii.gz\): registration 'none' .* shape"):
        keep_on_grid("FG6692", TCGA / "t2.nii.gz", TCGA / "t1c.nii.gz", tmp_path / "x.nii.gz", tmp_path / "x.mat")
    shifted = nib.Nifti1Image(original.get_fdata().astype(np.float32), original.affine @ np.array(
        [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 2.0], [0, 0, 0, 1]]))
    nib.save(shifted, tmp_path / "shifted.nii.gz")
    with pytest.raises(InputError, match=r"scan B1 .*affine differs .* by up to 2"):
        keep_on_grid("B1", tmp_path / "shifted.nii.gz", BRATS / "t1c.nii.gz", tmp_path / "x.nii.gz", tmp_path / "x.mat")
    assert not (tmp_path / "x.nii.gz").exists() and not (tmp_path / "x.mat").exists()


def test_per_scan_columns_override_the_configured_setting(tmp_path):
    config = {"skullstrip": {"backend": "auto", "frac": 0.5}, "registration": {"transform": "rigid"}}
    assert scan_settings(config, {"skullstrip": "none"}, "skullstrip") == {"backend": "none", "frac": 0.5}
    assert scan_settings(config, {"skullstrip": ""}, "skullstrip")["backend"] == "auto"
    assert scan_settings(config, {}, "registration")["transform"] == "rigid"
    sheet = tmp_path / "s.tsv"
    sheet.write_text("patient\tscan\tt1\tce_t1\tskullstrip\tregistration\n"
                     f"P1\tS1\t{BRATS / 't1.nii.gz'}\t{BRATS / 't1c.nii.gz'}\tnone\t\n"
                     f"P2\tS2\t{BRATS / 't1.nii.gz'}\t{BRATS / 't1c.nii.gz'}\tbet\tnone\n")
    table = load_samples({"source": "samplesheet", "samplesheet": str(sheet)}, None, None)
    assert list(table.skullstrip) == ["none", "bet"] and list(table.registration) == ["", "none"]  # not paths
    problems = [str(p) for p in check_sheet(table, ["t1", "ce_t1"])]
    assert problems == ["scan S2: skullstrip 'bet' is not one of ('auto', 'fsl', 'python', 'none') (the "
                        "skullstrip.backend of this scan; empty = the configured one)"]


def brats_folder(root, release, case):
    """One shared case laid out as a BraTS release, with a label map of that release's labels."""
    spec = sources.BRATS_RELEASES[release]
    folder = root / case
    folder.mkdir(parents=True)
    for modality, name in spec["files"].items():
        os.symlink(BRATS / f"{SHARED_NAMES[modality]}.nii.gz", folder / f"{case}{spec['sep']}{name}.nii.gz")
    ref = nib.load(BRATS / "t1c.nii.gz")
    seg = np.zeros(ref.shape, np.uint8)
    enhancing = 4 if release == "2021" else 3
    seg[100:140, 100:140, 60:90], seg[110:130, 110:130, 70:80], seg[115:125, 115:125, 72:78] = 2, enhancing, 1
    nib.save(nib.Nifti1Image(seg, ref.affine), folder / f"{case}{spec['sep']}seg.nii.gz")
    return seg


@pytest.mark.parametrize("release, cases, patients, names", [
    ("2021", ["BraTS2021_00001", "BraTS2021_00002"], ["BraTS2021_00001", "BraTS2021_00002"],
     {"t1": "_t1.", "ce_t1": "_t1ce.", "t2": "_t2.", "flair": "_flair."}),
    ("2023", ["BraTS-GLI-00001-000", "BraTS-GLI-00001-001"], ["BraTS-GLI-00001", "BraTS-GLI-00001"],
     {"t1": "-t1n.", "ce_t1": "-t1c.", "t2": "-t2w.", "flair": "-t2f."}),
])
def test_brats_layouts_give_names_labels_and_preprocessed_columns(tmp_path, release, cases, patients, names):
    segs = [brats_folder(tmp_path / "brats", release, case) for case in cases]
    cfg = {"source": "brats", "brats": {"root": str(tmp_path / "brats")}}
    table = load_samples(cfg, None, None)
    assert list(table.scan) == cases and list(table.patient) == patients
    for modality, name in names.items():
        assert all(name in p and os.path.isfile(p) for p in table[modality])
    assert table.tumour_mask.str.endswith(("_seg.nii.gz", "-seg.nii.gz")).all()
    assert (table.skullstrip == "none").all() and (table.registration == "none").all()
    labels = tumour_mask_labels(cfg)
    assert labels == ([1, 4] if release == "2021" else [1, 3])  # core: necrosis + enhancing, not oedema (2)

    # the tumour channel holds exactly the core labels
    mask = tmp_path / "mask.nii.gz"
    brain_mask(table.ce_t1[0], mask, SkullStripSettings(backend="none"), scan=cases[0])
    stack, channels, _ = preprocess_scan(table.ce_t1[0], {m: table[m][0] for m in ("t1", "t2", "flair")}, mask,
                                         {"shape": [240, 240, 155], "equalization": "percentile",
                                          "enhancement_delta": 0.1}, tumour_mask_path=table.tumour_mask[0],
                                         labels={"tumour": labels})
    tumour = stack[channels.index("tumour_mask")].transpose(2, 1, 0)  # (Z, Y, X) -> canonical (X, Y, Z)
    expected = nib.as_closest_canonical(nib.Nifti1Image(np.isin(segs[0], [1, 3, 4]).astype(np.uint8),
                                                        nib.load(table.ce_t1[0]).affine)).get_fdata() > 0
    assert tumour.sum() == expected.sum() == 20 * 20 * 10 and (tumour.astype(bool) == expected).all()


def test_brats_source_through_snakemake_with_set_b_patients(tmp_path):
    for case in ("BraTS-GLI-00001-000", "BraTS-GLI-00002-000", "BraTS-GLI-00003-000"):
        brats_folder(tmp_path / "brats", "2023", case)
    os.remove(tmp_path / "brats" / "BraTS-GLI-00003-000" / "BraTS-GLI-00003-000-seg.nii.gz")  # a validation case
    config = tmp_path / "brats.yaml"
    config.write_text(yaml.safe_dump({"input": {"source": "brats", "brats": {"root": str(tmp_path / "brats")}},
                                      "modalities": ["t1", "t2", "flair"], "split": {"set_b_patients": 1}}))
    work = tmp_path / "work"
    snakemake(work, "--cores", "1", "results/split.tsv", "results/qc/inputs_validated.tsv", configs=[config])
    split = pd.read_csv(work / "results" / "split.tsv", sep="\t")
    assert (split.set == "B").sum() == 1 and set(split.set) == {"B", "train", "test_A"}
    assert split.scan[split.set == "B"].iloc[0] != "BraTS-GLI-00003-000"  # set B needs a mask


def test_mixed_releases_are_refused(tmp_path):
    brats_folder(tmp_path / "brats", "2021", "BraTS2021_00001")
    brats_folder(tmp_path / "brats", "2023", "BraTS-GLI-00001-000")
    with pytest.raises(ValueError, match="both naming schemes"):
        sources.brats_table(tmp_path / "brats")
