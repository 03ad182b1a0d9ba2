"""Section ``none``: what the registration and skull-strip jobs cost for scans that need neither.

The BraTS-form patients of config/real.yaml (already co-registered and skull-stripped: ``registration: none``,
``skullstrip: none`` in its sample sheet) go through ``snakemake --until coregister skullstrip --cores 2`` in a
fresh folder; each job's wall and CPU seconds come from its Snakemake benchmark file, Python start-up and
imports included (a job is a process of its own).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd

from benchmarks.common import REPO, row, snakemake_executable

TARGET_S = 2.0


def job_seconds(work: Path) -> pd.DataFrame:
    """Per job of the passthrough scans: rule, scan, wall and CPU seconds."""
    sheet = pd.read_csv(REPO / "config" / "real" / "samples.tsv", sep="\t")
    passthrough = set(sheet.scan[(sheet.registration == "none") & (sheet.skullstrip == "none")])
    snakemake = snakemake_executable()
    work.mkdir(parents=True)
    (work / "config").symlink_to(REPO / "config")  # the sheet's paths are relative to the working directory
    done = subprocess.run([snakemake, "-s", str(REPO / "Snakefile"), "--directory", str(work), "--cores", "2",
                           "--configfile", "config/real.yaml", "--until", "coregister", "skullstrip"],
                          capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"snakemake failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    rows = []
    for rule in ("coregister", "skullstrip"):
        for path in sorted((work / "results" / "benchmarks" / rule).glob("*.tsv")):
            scan = next((s for s in passthrough if path.stem == s or path.stem.startswith(f"{s}_")), None)
            if scan:
                table = pd.read_csv(path, sep="\t")
                rows.append({"rule": rule, "scan": scan, "s": table.s.iloc[-1], "cpu": table.cpu_time.iloc[-1]})
    return pd.DataFrame(rows)


def rows(tmp: Path) -> list[dict]:
    jobs = job_seconds(tmp / "passthrough")
    out = []
    for rule, group in jobs.groupby("rule"):
        case = (f"{rule} 'none', {group.scan.nunique()} BraTS-form patients of config/real.yaml, "
                f"{len(group)} jobs: mean wall per job")
        out.append(row("none", case, group.s.mean(), "s", None, "", f"measured; max {group.s.max():.2f} s, "
                       f"CPU mean {group.cpu.mean():.2f} s; target <= {TARGET_S:.0f} s each"))
    return out
