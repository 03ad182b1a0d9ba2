"""Section ``demo``: where README command 1's time goes, per rule family and in Snakemake's own process.

``python -m benchmarks.demo COMMIT DIR`` runs README command 1 exactly (venv, install, ``snakemake --cores all``,
``snakemake --report``) on a fresh clone of COMMIT in DIR, which must lie beside this repository so that the
clone finds ``../shared``, and writes DIR/demo_timing.json: the wall seconds of the install and of the whole
command, the CPU seconds of the snakemake process itself (read from /proc every 2 s: the scheduler's share of
the two cores), and the machine's 1-min load before and after.

The section ``demo`` of ``python -m benchmarks`` tabulates finished runs named by ``CESYNTH_DEMO_RUNS``
(``label=DIR,label=DIR``, e.g. ``before=../t_old,after=../t_new``): the command's wall time, the scheduler's CPU,
and per rule family the summed wall and CPU minutes of its jobs from their Snakemake benchmark files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from benchmarks.common import REPO, row

RUNS_ENV = "CESYNTH_DEMO_RUNS"
TIMING = "demo_timing.json"


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (not its children: the jobs are children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_demo(commit: str, work: Path) -> dict:
    """README command 1 on a fresh clone of ``commit`` in ``work``; its timing, also written to work/TIMING."""
    if work.exists():
        raise SystemExit(f"{work} exists: the demo is timed on a fresh clone")
    subprocess.run(["git", "clone", "-q", str(REPO), str(work)], check=True)
    subprocess.run(["git", "-C", str(work), "checkout", "-q", commit], check=True)
    load_before, started = os.getloadavg()[0], time.perf_counter()
    with open(work / "install.log", "w") as log:
        subprocess.run("python3 -m venv .venv && .venv/bin/pip install -r requirements.txt -e .", shell=True,
                       cwd=work, stdout=log, stderr=subprocess.STDOUT, check=True)
    installed = time.perf_counter()
    with open(work / "snakemake.log", "w") as log:
        study = subprocess.Popen([".venv/bin/snakemake", "--cores", "all"], cwd=work, stdout=log,
                                 stderr=subprocess.STDOUT)
        scheduler_cpu = 0.0
        while study.poll() is None:
            try:
                scheduler_cpu = process_cpu_seconds(study.pid)
            except (FileNotFoundError, ProcessLookupError):  # it just ended
                pass
            time.sleep(2)
        if study.returncode:
            raise SystemExit(f"snakemake failed ({study.returncode}): see {work / 'snakemake.log'}")
        subprocess.run([".venv/bin/snakemake", "--report", "results/report.html"], cwd=work, stdout=log,
                       stderr=subprocess.STDOUT, check=True)
    timing = {"commit": subprocess.run(["git", "-C", str(work), "rev-parse", "--short", "HEAD"], capture_output=True,
                                       text=True, check=True).stdout.strip(),
              "install_s": installed - started, "total_s": time.perf_counter() - started,
              "scheduler_cpu_s": scheduler_cpu, "load": [load_before, os.getloadavg()[0]]}
    (work / TIMING).write_text(json.dumps(timing, indent=1))
    return timing


def rule_families(work: Path) -> pd.DataFrame:
    """Per rule: jobs, summed wall and CPU minutes, from the run's Snakemake benchmark files."""
    rows = [{"rule": p.parent.name, "s": t["s"].iloc[-1], "cpu": t["cpu_time"].iloc[-1]}
            for p in sorted((work / "results" / "benchmarks").glob("*/*.tsv"))
            for t in [pd.read_csv(p, sep="\t")]]
    table = pd.DataFrame(rows).groupby("rule").agg(jobs=("s", "size"), wall_min=("s", "sum"), cpu_min=("cpu", "sum"))
    table[["wall_min", "cpu_min"]] /= 60
    return table.sort_values("wall_min", ascending=False)


def runs() -> dict[str, Path]:
    spec = os.environ.get(RUNS_ENV, "")
    return {label: Path(folder) for label, folder in (item.split("=", 1) for item in spec.split(",") if item)}


def rows() -> list[dict]:
    found = runs()
    if not found:  # a 25-minute run per commit is not part of every benchmark run
        print(f"section demo: no rows (set {RUNS_ENV}=label=DIR,... to finished `python -m benchmarks.demo` runs)",
              file=sys.stderr)
        return []
    out, first = [], None
    for label, work in found.items():
        timing = json.loads((work / TIMING).read_text())
        first = first or (label, timing["total_s"])
        where = f"{label}: main {timing['commit']}"
        load = (f"load {timing['load'][0]:.1f} before, {timing['load'][1]:.1f} after" if timing.get("load")
                else "load not recorded")
        out.append(row("demo", f"{where}: README command 1, fresh clone, wall", timing["total_s"] / 60, "min",
                       timing["total_s"] / first[1], first[0], f"measured; install {timing['install_s']:.0f} s; {load}"))
        out.append(row("demo", f"{where}: Snakemake's own process, CPU", timing["scheduler_cpu_s"] / 60, "min", None,
                       "", "measured (/proc, every 2 s)"))
        for rule, family in rule_families(work).iterrows():
            out.append(row("demo", f"{where}: rule {rule}, {int(family.jobs)} jobs, summed wall", family.wall_min, "min",
                           None, "", f"measured (benchmark files); CPU {family.cpu_min:.2f} min"))
    return out


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python -m benchmarks.demo COMMIT DIR")
    print(json.dumps(run_demo(sys.argv[1], Path(sys.argv[2]).resolve())))
