"""``input.skip_invalid``: leave out broken scans instead of stopping the whole study.

The scans to leave out must be known when Snakemake builds the DAG: the split, the training sets
and the study tables are all computed from the cohort at parse time, and a scan that silently
dropped out later would leave them inconsistent (a test set that names a scan with no prediction).
So every scan gets the full per-file check of :mod:`cesynth.inputs.validate` when the workflow is parsed.
Parsing writes nothing (``snakemake -n`` leaves no trace): the scans left out are printed, and the
``skipped_scans`` rule writes them (one line per problem) with this parse's checks, keyed by file
size and modification time, as the cache that the next parse reads, so that it opens only new or
changed files.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cesynth.inputs.validate import InputError, Problem, check_files, check_sheet
from cesynth.io import read_json, write_json, write_table


@dataclass
class Screening:
    problems: list[Problem]  # of the scans left out
    checks: dict  # cache key -> problems found (as dicts), for every scan checked in this parse


def screen_scans(table: pd.DataFrame, modalities: list[str], reference: str, mask_labels=None,
                 cache_path=None) -> tuple[pd.DataFrame, Screening]:
    """(the scans without problems, what was found); reads the cache at ``cache_path`` if any, writes nothing.

    ``modalities`` lists every image column to check, the reference included; ``mask_labels`` as in
    :func:`~cesynth.inputs.validate.check_files`.
    """
    structural = [p for p in check_sheet(table, modalities, check_exists=False) if p.scan == "*"]
    if structural:  # a sheet without the needed columns has no valid scan to keep
        raise InputError(structural)
    cache = read_json(cache_path) if cache_path and Path(cache_path).is_file() else {}
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
    valid = table[keep]
    if valid.empty:
        raise InputError(problems)
    return valid, Screening(problems, fresh)  # only current files: the cache does not grow with stale entries


def write_screening(problems: list[dict], checks: dict, report_path, cache_path):
    """The report of the scans left out (scan, file, problem) and the checks cache of the next parse."""
    write_table(pd.DataFrame(problems, columns=["scan", "file", "problem"]), report_path)
    write_json(checks, cache_path)


def _key(row: pd.DataFrame, modalities, mask_labels) -> str:
    """Identity of one scan's check: its files' paths, sizes and modification times, and the mask labels."""
    record = row.iloc[0].to_dict()
    files = [str(record.get(c) or "") for c in dict.fromkeys([*modalities, "tumour_mask"])]
    stats = []
    for f in files:
        stat = Path(f).stat() if f else None
        stats.append([f, stat.st_size, stat.st_mtime_ns] if stat else [f])
    return hashlib.sha256(json.dumps([record["scan"], stats, mask_labels]).encode()).hexdigest()
