"""File input/output: NIfTI volumes, preprocessed stacks, tables and JSON, always written atomically.

Every writer goes through :func:`atomic_output` so that a crash or a kill never leaves a
half-written file at a path that Snakemake (or a user) could mistake for a finished result.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import html
import json
import os
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

from cesynth.preprocess import intensity


def _temporary_name(path: Path) -> tuple[str, str]:
    """(prefix, suffix) of the temporary files of :func:`atomic_output` for ``path``."""
    return f".{path.name.split('.')[0]}.", "".join(path.suffixes)  # keep .nii.gz so writers pick the format


@contextlib.contextmanager
def atomic_output(path):
    """Yield a temporary path next to ``path``; move it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix, suffix = _temporary_name(path)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def remove_partial_writes(path) -> list[Path]:
    """Delete what :func:`atomic_output` was writing for ``path`` when its process was killed.

    SIGKILL (a node crash, the out-of-memory killer) skips the cleanup of the temporary file; call
    this only from the one process that writes ``path``, before it writes.
    """
    path = Path(path)
    prefix, suffix = _temporary_name(path)
    partial = sorted(path.parent.glob(f"{glob.escape(prefix)}*{glob.escape(suffix)}"))
    for p in partial:
        p.unlink(missing_ok=True)
    return partial


def load_nifti(path, dtype=np.float32):
    """Return (array, affine) of a 3-D NIfTI image, in its stored voxel order."""
    img = nib.load(str(path))
    return np.asarray(img.dataobj, dtype=dtype), img.affine


def save_nifti(array, affine, path, dtype=np.float32, description: str | None = None):
    """Write ``array`` with ``affine`` into a fresh header.

    A fresh header carries only geometry: free-text fields of the source scans (descrip,
    db_name, aux_file), which may hold patient information, are never copied into outputs.
    """
    img = nib.Nifti1Image(np.asarray(array, dtype=dtype), affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    if description:
        img.header["descrip"] = description[:79].encode()
    with atomic_output(path) as tmp:
        nib.save(img, str(tmp))


_PAGE_STYLE = ("body{font-family:sans-serif;max-width:100%} .table{overflow-x:auto;max-width:100%} "
               "table{border-collapse:collapse;font-size:13px} td,th{border:1px solid #bbb;padding:3px 6px;"
               "text-align:right;white-space:nowrap}")


def write_html_page(path, title: str, body_html: str, intro: str = ""):
    """A standalone HTML page (report item) with an escaped title; wide tables scroll inside their box."""
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_PAGE_STYLE}</style></head><body><h3>{html.escape(title)}</h3>"
            f"{f'<p>{html.escape(intro)}</p>' if intro else ''}<div class='table'>{body_html}</div></body></html>\n")
    with atomic_output(path) as tmp:
        tmp.write_text(page)


def sha256(path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json(obj, path):
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")


def read_json(path):
    return json.loads(Path(path).read_text())


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_table(df, path, sep="\t"):
    with atomic_output(path) as tmp:
        df.to_csv(tmp, sep=sep, index=False)


# Preprocessed scans are stored as one (channels, Z, Y, X) float32 array in a plain .npy file,
# which training memory-maps, plus a JSON sidecar naming the channels and the geometry.

def save_stack(stack: np.ndarray, channels: list[str], affine: np.ndarray, npy_path, json_path, extra=None):
    if stack.shape[0] != len(channels):
        raise ValueError(f"{len(channels)} channel names for a stack of {stack.shape[0]} channels")
    intensity.check_stack(stack, channels, npy_path)
    with atomic_output(npy_path) as tmp:
        np.save(tmp, np.ascontiguousarray(stack, dtype=np.float32))
    write_json({"channels": channels, "affine": affine, "shape_xyz": list(stack.shape[:0:-1]), **(extra or {})},
               json_path)


class Stack:
    """A preprocessed scan: channels by name, memory-mapped, with the model-space affine; every channel in the
    model-space range (:mod:`cesynth.preprocess.intensity`, checked on opening).

    Arrays are (Z, Y, X): axial slices first, which is the layout the models consume.
    """

    def __init__(self, npy_path, json_path=None):
        self.npy_path = Path(npy_path)
        json_path = Path(json_path) if json_path else self.npy_path.with_suffix(".json")
        meta = read_json(json_path)
        self.channels: list[str] = meta["channels"]
        self.affine = np.asarray(meta["affine"], dtype=float)
        self.meta = meta
        self.data = np.load(self.npy_path, mmap_mode="r")
        intensity.check_stack(self.data, self.channels, self.npy_path)

    def __getitem__(self, name) -> np.ndarray:
        if name not in self.channels:
            raise KeyError(f"{self.npy_path.name} has no channel {name!r}; it has {self.channels}")
        return self.data[self.channels.index(name)]

    def get(self, names) -> np.ndarray:
        return np.stack([self[n] for n in names])

    def has(self, name) -> bool:
        return name in self.channels

    def to_xyz(self, zyx: np.ndarray) -> np.ndarray:
        """Stack layout (Z, Y, X) -> NIfTI voxel order (X, Y, Z)."""
        return np.transpose(zyx, (2, 1, 0))


@contextlib.contextmanager
def redirect_output(log_path):
    """Send stdout and stderr (progress bars, warnings, tracebacks) of a rule script to its log."""
    import sys
    import traceback

    with open(log_path, "w") as log:
        saved = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = log
        try:
            yield log
        except BaseException:
            traceback.print_exc(file=log)
            log.flush()
            keep_failed_log(log_path)
            raise
        finally:
            sys.stdout, sys.stderr = saved


def keep_failed_log(log_path) -> Path:
    """Append a failed attempt's log to ``<log>.failed``: Snakemake deletes a job's log before it
    retries the job (--retries), and the first failure is often the informative one."""
    import datetime
    import socket

    failed = Path(f"{log_path}.failed")
    stamp = datetime.datetime.now().isoformat(timespec="seconds")
    job = os.environ.get("SLURM_JOB_ID", "-")
    with open(failed, "a") as out:
        out.write(f"==== failed attempt: {stamp} host {socket.gethostname()} SLURM job {job}\n")
        out.write(Path(log_path).read_text(errors="replace"))
    return failed
