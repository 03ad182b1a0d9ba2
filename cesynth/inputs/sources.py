"""Sample tables from a BIDS dataset, a UCSF-PDGM or a BraTS release, read by file name (no pybids needed).

Both give the same table as a sample sheet (:func:`cesynth.inputs.cohort.load_samples`): patient, scan,
one path column per modality, tumour_mask ('' when none). A modality that is not found gets the
pattern that was searched for as its path, so the usual sheet check names the scan, the modality
and where it looked ("t2 file does not exist").
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

_NIFTI = re.compile(r"^(?P<stem>.+)\.nii(\.gz)?$")


def parse_name(name: str) -> dict | None:
    """BIDS entities of a NIfTI file name, with its suffix: sub-01_ce-gd_T1w.nii.gz -> {sub, ce, suffix}."""
    match = _NIFTI.match(name)
    if not match:
        return None
    *pairs, suffix = match["stem"].split("_")
    entities = dict(p.split("-", 1) for p in pairs if "-" in p)
    return {**entities, "suffix": suffix} if len(entities) == len(pairs) else None


def _select(files: list[dict], selector: dict, where: Path, sub: str, ses: str | None) -> str:
    """The one file matching ``selector``; among several, the one without extra entities (plain T1w
    rather than ce-gadolinium T1w). Ambiguity is an error; none found gives the searched pattern."""
    wanted = {k: str(v) for k, v in selector.items()}
    found = [f for f in files if all(f.get(k) == v for k, v in wanted.items())]
    if len(found) > 1:
        found = [f for f in found if set(f) - {"sub", "ses", "path"} <= set(wanted)] or found
    if len(found) > 1:
        raise ValueError(f"BIDS: several files match {selector} for sub-{sub}"
                         f"{f' ses-{ses}' if ses else ''}: {sorted(f['path'] for f in found)}")
    if found:
        return found[0]["path"]
    pattern = "*" + "".join(f"{k}-{v}*" for k, v in wanted.items() if k != "suffix")
    return str(where / f"{pattern}_{wanted.get('suffix', '*')}.nii*")


def _sessions(root: Path):
    """(sub, ses or None, folder) of every session directory (or subject without sessions)."""
    for sub_dir in sorted(root.glob("sub-*")):
        if not sub_dir.is_dir():
            continue
        sub = sub_dir.name[4:]
        ses_dirs = sorted(d for d in sub_dir.glob("ses-*") if d.is_dir())
        for ses_dir in ses_dirs or [sub_dir]:
            yield sub, (ses_dir.name[4:] if ses_dirs else None), ses_dir


def _files(folder: Path, sub: str, ses: str | None) -> list[dict]:
    out = []
    for path in sorted(folder.glob("*.nii*")):
        entities = parse_name(path.name)
        if entities and entities.get("sub") == sub and entities.get("ses") == ses:
            out.append({**entities, "path": str(path)})
    return out


def bids_table(bids_cfg: dict) -> pd.DataFrame:
    """Sample table of a BIDS tree: patient = sub-<label>, scan = sub-<label>_ses-<label>.

    ``bids_cfg``: ``root``; ``modalities``: name -> entity selector (``suffix`` and any entity, e.g.
    ``{suffix: T1w, ce: gadolinium}``), looked up in ``anat/`` (``dwi/`` too, for ADC maps);
    ``tumour_mask`` (optional): a selector with ``root`` (a derivatives folder, relative to the BIDS
    root unless absolute) searched with the same sub/ses layout.
    """
    root = Path(bids_cfg["root"])
    mask_cfg = dict(bids_cfg.get("tumour_mask") or {})
    mask_root = root / mask_cfg.pop("root") if mask_cfg else None
    rows = []
    for sub, ses, folder in _sessions(root):
        files = [f for kind in ("anat", "dwi") for f in _files(folder / kind, sub, ses)]
        scan = f"sub-{sub}" + (f"_ses-{ses}" if ses else "")
        row = {"patient": f"sub-{sub}", "scan": scan}
        for name, selector in bids_cfg["modalities"].items():
            row[name] = _select(files, selector, folder / "anat", sub, ses)
        row["tumour_mask"] = ""
        if mask_root is not None:
            mask_folder = mask_root / folder.relative_to(root) / "anat"
            found = _select(_files(mask_folder, sub, ses), mask_cfg, mask_folder, sub, ses)
            row["tumour_mask"] = found if Path(found).is_file() else ""  # a mask is optional per scan
        rows.append(row)
    if not rows:
        raise ValueError(f"BIDS: no sub-* folders under {root}")
    return pd.DataFrame(rows)


# UCSF-PDGM (UCSF preoperative diffuse glioma MRI, TCIA): one folder per patient, one scan each,
# UCSF-PDGM-XXXX_nifti/UCSF-PDGM-XXXX_<sequence>.nii.gz. Its tumour segmentation is a BraTS label map
# (1 necrotic/non-enhancing core, 2 oedema, 4 enhancing tumour); by default the tumour is the core
# (1, 4), what is outlined as tumour on the post-contrast T1 (oedema is a FLAIR finding).
UCSF_PDGM_FILES = {"t1": "T1", "ce_t1": "T1c", "t2": "T2", "flair": "FLAIR", "adc": "ADC", "swi": "SWI",
                   "dwi": "DWI"}
UCSF_PDGM_SEGMENTATION = "tumor_segmentation"
UCSF_PDGM_LABELS = {"labels": [1, 4], "enhancing": [4]}  # tumour, enhancing tumour (keys as BRATS_RELEASES')
# Curated releases come co-registered and skull-stripped: their scans skip both steps (the per-scan columns
# of cesynth.inputs.validate.SCAN_OPTIONS), which then check that this holds (same grid; a brain, not a head).
PREPROCESSED = {"skullstrip": "none", "registration": "none"}


def ucsf_pdgm_table(root) -> pd.DataFrame:
    """Sample table of a UCSF-PDGM release folder: patient = scan = UCSF-PDGM-XXXX, every sequence a
    column, tumour_mask = the tumour segmentation (a label map; see :func:`cohort.tumour_mask_labels`)."""
    root = Path(root)
    rows = []
    for folder in sorted(root.glob("*_nifti")):
        scan = folder.name[: -len("_nifti")]
        mask = folder / f"{scan}_{UCSF_PDGM_SEGMENTATION}.nii.gz"
        rows.append({"patient": scan, "scan": scan, "tumour_mask": str(mask) if mask.is_file() else "",
                     **{m: str(folder / f"{scan}_{name}.nii.gz") for m, name in UCSF_PDGM_FILES.items()},
                     **PREPROCESSED})
    if not rows:
        raise ValueError(f"UCSF-PDGM: no <id>_nifti folders under {root}")
    return pd.DataFrame(rows)


# BraTS (adult glioma and the later BraTS cohorts): one folder per case, co-registered to SRI24 and
# skull-stripped, 240 x 240 x 155 at 1 mm. Two naming schemes:
#   2021 (and 2018-2020):  <case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz, seg labels 1 NCR/NET, 2 ED, 4 ET
#   2023 and later:        <case>/<case>-{t1n,t1c,t2w,t2f,seg}.nii.gz, seg labels 1 NCR, 2 ED/SNFH, 3 ET
# Tumour = the tumour core (necrosis + enhancing tumour), as for UCSF-PDGM: what is outlined on the CE-T1.
BRATS_RELEASES = {
    "2023": {"sep": "-", "files": {"t1": "t1n", "ce_t1": "t1c", "t2": "t2w", "flair": "t2f"}, "labels": [1, 3], "enhancing": [3]},
    "2021": {"sep": "_", "files": {"t1": "t1", "ce_t1": "t1ce", "t2": "t2", "flair": "flair"}, "labels": [1, 4], "enhancing": [4]},
}
_BRATS_TIMEPOINT = re.compile(r"-\d{3}$")  # BraTS-GLI-00001-000: patient 00001, time point 000


def _brats_cases(root: Path) -> list[Path]:
    cases = sorted(d for d in Path(root).iterdir() if d.is_dir())
    if not cases:
        raise ValueError(f"BraTS: no case folders under {root}")
    return cases


def brats_release(root) -> str:
    """Which naming scheme a BraTS folder uses ("2021" or "2023"), from its cases' seg or T1 file names."""
    found = set()
    for case in _brats_cases(root):
        for release, spec in BRATS_RELEASES.items():
            names = ("seg", spec["files"]["t1"])
            if any((case / f"{case.name}{spec['sep']}{name}.nii.gz").is_file() for name in names):
                found.add(release)
                break
    if len(found) != 1:
        raise ValueError(f"BraTS: {root} holds " + ("cases of both naming schemes (2021: <case>_t1.nii.gz, 2023+: "
                         "<case>-t1n.nii.gz); use one release per root" if found else
                         "no case with <case>_t1.nii.gz (2021) or <case>-t1n.nii.gz (2023+) files"))
    return found.pop()


def brats_table(root) -> pd.DataFrame:
    """Sample table of a BraTS release folder: scan = case folder; patient = the case without its time point
    (2023+: BraTS-GLI-00001-000 -> BraTS-GLI-00001); modalities t1, ce_t1, t2, flair; tumour_mask = seg where
    present (validation cases have none); already co-registered and skull-stripped (:data:`PREPROCESSED`)."""
    release = brats_release(root)
    spec = BRATS_RELEASES[release]
    rows = []
    for case in _brats_cases(root):
        seg = case / f"{case.name}{spec['sep']}seg.nii.gz"
        patient = _BRATS_TIMEPOINT.sub("", case.name) if release == "2023" else case.name
        rows.append({"patient": patient, "scan": case.name, "tumour_mask": str(seg) if seg.is_file() else "",
                     **{m: str(case / f"{case.name}{spec['sep']}{name}.nii.gz") for m, name in spec["files"].items()},
                     **PREPROCESSED})
    return pd.DataFrame(rows)
