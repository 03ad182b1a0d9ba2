"""``input.skip_invalid``: leave out broken scans instead of stopping the whole study.

The scans to leave out must be known when Snakemake builds the DAG: the split, the training sets
and the study tables are all computed from the cohort at parse time, and a scan that silently
dropped out later would leave them inconsistent (a test set that names a scan with no prediction).
So every scan gets the full per-file check of :mod:`cesynth.validate` when the workflow is parsed;
results are cached by file size and modification time, so a rerun opens only new or changed files.
The scans left out are listed, one line per problem, in :data:`REPORT` and on the terminal.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd

from . import study as S
from .io import read_json, write_json, write_table
from .validate import InputError, Problem, check_files, check_sheet

CACHE = f"{S.RESULTS}/qc/input_screening.json"
REPORT = f"{S.RESULTS}/qc/skipped_scans.tsv"


def screen_scans(table: pd.DataFrame, modalities: list[str], reference: str, mask_labels=None, cache_path=CACHE,
                 report_path=REPORT) -> tuple[pd.DataFrame, list[Problem]]:
    """(the scans without problems, the problems of the others); writes the report and the cache.

    ``modalities`` lists every image column to check, the reference included; ``mask_labels`` as in
    :func:`~cesynth.validate.check_files`.
    """
    structural = [p for p in check_sheet(table, modalities, check_exists=False) if p.scan == "*"]
    if structural:  # a sheet without the needed columns has no valid scan to keep
        raise InputError(structural)
    cache = read_json(cache_path) if Path(cache_path).is_file() else {}
    duplicated = set(table.scan[table.scan.duplicated()])
    problems, keep, fresh = [], [], {}
    for i in range(len(table)):
        row = table.iloc[[i]]
        scan = row.scan.iloc[0]
        found = check_sheet(row, modalities)  # ids and existence, cheap
        if scan in duplicated:
            found.append(Problem(scan, "", "scan id appears more than once in the sample sheet"))
        if not found:
            key = _key(row, modalities, mask_labels)
            if key not in cache:
                cache[key] = [vars(p) for p in check_files(row, modalities, reference, mask_labels)]
            fresh[key] = cache[key]
            found = [Problem(**p) for p in cache[key]]
        problems += found
        keep.append(not found)
    write_json(fresh, cache_path)  # only current files: the cache does not grow with stale entries
    write_table(pd.DataFrame([vars(p) for p in problems], columns=["scan", "file", "problem"]), report_path)
    valid = table[keep]
    if valid.empty:
        raise InputError(problems)
    return valid, problems


def _key(row: pd.DataFrame, modalities, mask_labels) -> str:
    """Identity of one scan's check: its files' paths, sizes and modification times, and the mask labels."""
    record = row.iloc[0].to_dict()
    files = [str(record.get(c) or "") for c in dict.fromkeys([*modalities, "tumour_mask"])]
    stats = []
    for f in files:
        stat = Path(f).stat() if f else None
        stats.append([f, stat.st_size, stat.st_mtime_ns] if stat else [f])
    return hashlib.sha256(json.dumps([record["scan"], stats, mask_labels]).encode()).hexdigest()
