"""SLURM: send GPU rules to the GPU partition, and refuse, before submitting, a job that no node of its
partition could ever run.

SLURM accepts such a job and leaves it pending for ever (Reason=PartitionConfig or Resources); a
user only sees Snakemake waiting. The nodes come from ``sinfo``; a request is what the executor
plugin turns into sbatch options (CPUs, memory, GPUs, partition).
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

SINFO = ["sinfo", "-h", "-N", "-o", "%P %c %m %G"]
# The GPU rules' partition (the first of these set; the CPU partition is the profile's default resource) and GPU
# type, as profiles/slurm/README.md documents them.
GPU_PARTITION_ENV = ("CESYNTH_SLURM_GPU_PARTITION", "CESYNTH_SLURM_PARTITION")
GPU_MODEL_ENV = "CESYNTH_GPU_MODEL"


def route_gpu_rules(rules, overwrite_resources, environ) -> None:
    """Give every rule that declares a GPU (resource ``gpu``) the GPU partition and model named by ``environ``,
    whatever its name (rules made in a loop included), so that no GPU job waits in a CPU partition. A setting left
    unset is left out (the cluster's default partition, any GPU); a resource given for the rule with
    ``--set-resources`` (``overwrite_resources``) wins."""
    partition = next((environ[name] for name in GPU_PARTITION_ENV if environ.get(name)), "")
    routed = {k: v for k, v in {"slurm_partition": partition, "gpu_model": environ.get(GPU_MODEL_ENV, "")}.items() if v}
    for rule in rules:
        if "gpu" in rule.resources and rule.resources["gpu"].raw != 0:
            given = overwrite_resources.get(rule.name, {})
            for name, value in routed.items():
                if name not in given:
                    rule.resources[name] = value


@dataclass(frozen=True)
class Request:
    name: str          # what the user reads: "rule train_stage1 (hrfcn3d)" or "group job scan (S1)"
    fix: str           # the flag that lowers it
    partition: str     # "" = the cluster's default partition
    cpus: int
    mem_mb: int
    gpus: int = 0


def parse_sinfo(text: str) -> tuple[dict[str, list[tuple[int, int, int]]], str]:
    """Nodes (CPUs, memory MB, GPUs) per partition, and the default partition (marked ``*``)."""
    nodes: dict[str, list[tuple[int, int, int]]] = {}
    default = ""
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        partition, cpus, mem = fields[:3]
        if partition.endswith("*"):
            partition = default = partition[:-1]
        gres = fields[3] if len(fields) > 3 else ""
        nodes.setdefault(partition, []).append((_int(cpus), _int(mem), gpu_count(gres)))
    return nodes, default


def gpu_count(gres: str) -> int:
    """GPUs in a node's GRES string, e.g. ``gpu:2``, ``gpu:a100:4(S:0-1)``, ``(null)``."""
    return sum(int(m) for m in re.findall(r"gpu(?::[^:,(]+)?:(\d+)", gres))


def _int(value: str) -> int:
    return int(re.match(r"\d+", value).group()) if re.match(r"\d+", value) else 0


def misfits(requests, sinfo_text: str) -> list[str]:
    """One line per request that fits no node of its partition."""
    nodes, default = parse_sinfo(sinfo_text)
    lines = []
    for r in requests:
        partition = r.partition or default
        candidates = nodes.get(partition)
        if candidates is None:
            lines.append(f"SLURM: {r.name}: partition {partition!r} does not exist (sinfo lists "
                         f"{', '.join(sorted(nodes))}); set CESYNTH_SLURM_PARTITION / CESYNTH_SLURM_GPU_PARTITION")
            continue
        if any(c >= r.cpus and m >= r.mem_mb and g >= r.gpus for c, m, g in candidates):
            continue
        cpus, mem, gpus = (max(n[i] for n in candidates) for i in range(3))
        lines.append(f"SLURM: {r.name} asks for {r.cpus} CPUs, {r.mem_mb} MB" + (f", {r.gpus} GPUs" if r.gpus else "")
                     + f" but no node of partition {partition!r} has that (largest: {cpus} CPUs, {mem} MB, "
                     f"{gpus} GPUs); it would pend for ever: lower it with {r.fix} or choose another partition")
    return lines


def sinfo() -> str:
    return subprocess.run(SINFO, capture_output=True, text=True, check=True, timeout=60).stdout


def requests(jobs) -> list[Request]:
    """What each Snakemake job (or group job) will ask sbatch for, as the executor plugin maps it."""
    found = []
    for job in jobs:
        res = job.resources
        if hasattr(job, "groupid"):  # a group job: Snakemake's combined request over its rules
            scans = sorted({str(j.wildcards_dict.get("scan") or j.wildcards_dict.get("pscan")) for j in job.jobs})
            name = f"group job {job.groupid!r} ({', '.join(scans[:3])})"
            fix = "--resources mem_mb=N (the profile's limit per group job) or --set-threads"
        else:
            wildcards = ", ".join(f"{k}={v}" for k, v in job.wildcards_dict.items())
            name = f"rule {job.rule.name}" + (f" ({wildcards})" if wildcards else "")
            fix = f"--set-resources {job.rule.name}:mem_mb=N / --set-threads {job.rule.name}=N"
        found.append(Request(name, fix, str(res.get("slurm_partition") or ""), int(job.threads),
                             int(res.get("mem_mb") or 0), int(res.get("gpu") or 0)))
    return found
