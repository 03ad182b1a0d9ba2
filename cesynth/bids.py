"""Sample tables from a BIDS dataset or a UCSF-PDGM release, read by file name (no pybids needed).

Both give the same table as a sample sheet (:func:`cesynth.cohort.load_samples`): patient, scan,
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
UCSF_PDGM_TUMOUR_LABELS = [1, 4]


def ucsf_pdgm_table(root) -> pd.DataFrame:
    """Sample table of a UCSF-PDGM release folder: patient = scan = UCSF-PDGM-XXXX, every sequence a
    column, tumour_mask = the tumour segmentation (a label map; see :func:`cohort.tumour_mask_labels`)."""
    root = Path(root)
    rows = []
    for folder in sorted(root.glob("*_nifti")):
        scan = folder.name[: -len("_nifti")]
        mask = folder / f"{scan}_{UCSF_PDGM_SEGMENTATION}.nii.gz"
        rows.append({"patient": scan, "scan": scan, "tumour_mask": str(mask) if mask.is_file() else "",
                     **{m: str(folder / f"{scan}_{name}.nii.gz") for m, name in UCSF_PDGM_FILES.items()}})
    if not rows:
        raise ValueError(f"UCSF-PDGM: no <id>_nifti folders under {root}")
    return pd.DataFrame(rows)
