"""What the SLURM profile asks of the cluster for each job, read from dry runs: no SLURM needed, so these run
everywhere (tests/test_slurm.py runs jobs through a local cluster).

Every rule that declares a GPU goes to the GPU partition (cesynth.pipeline.slurmfit.route_gpu_rules), and
profiles/slurm/README.md's table of what each rule asks for is the one these dry runs give.
"""

import os
import re
import subprocess
import sys
import time

import pytest

from conftest import REPO, predict_sheet
from slurm_cluster import CPU_PARTITION, GPU_PARTITION

MODEL = "unet2d"
WEIGHTS = f"results/models/{MODEL}/stage1/weights.pt"
# Both partitions named, as on a cluster with a CPU and a GPU partition.
PARTITION_ENV = {"CESYNTH_SLURM_PARTITION": CPU_PARTITION, "CESYNTH_SLURM_GPU_PARTITION": GPU_PARTITION}
# The rules that declare gpu=1 today (the routing itself names none: every rule with a GPU is routed).
GPU_RULES = {"train_stage1", "train_stage2", "infer", "uncertainty", "predict_synthesize"}
# profiles/slurm/README.md tabulates the requests under the demo's configuration and the paper's.
TABLE_CONFIGS = {"config.yaml": [], "config/paper.yaml": [REPO / "config" / "paper.yaml"]}
RULE_TABLE = re.compile(r"<!-- rule table: tests/test_slurm_routing.py -->\n(.*?)<!-- end of rule table -->", re.S)
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
SLURM_OVERRIDES = [
    "--profile", str(REPO / "profiles" / "slurm"),
    "--retries", "0",
    "--slurm-no-account",
    "--slurm-keep-successful-logs",
    "--verbose",
    # Only mtime decides what reruns, as in the local run before: the SLURM part must be exactly
    # the forced jobs even if a source file was edited meanwhile (a shared checkout).
    "--rerun-triggers", "mtime",
]


def snakemake(workdir, configfiles, args, env=None, timeout=600, cluster=None):
    """Targets go last in ``args``, after a single-valued option (--configfile etc. take lists); on a timeout the
    failure shows the queue of ``cluster`` (a tests/slurm_cluster.LocalSlurm), if given."""
    cmd = [*SNAKEMAKE, "--directory", str(workdir), "--configfile", *map(str, configfiles), *args]
    start = time.monotonic()
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        queue = cluster.run("squeue", "-t", "all", "-o", "%i %P %T %r %C %m %b %k", check=False).stdout if cluster else ""
        out = (e.stdout or b"").decode(errors="replace") + (e.stderr or b"").decode(errors="replace")
        pytest.fail(f"snakemake did not finish in {timeout}s\nsqueue:\n{queue}\n{out[-6000:]}")
    result.seconds = time.monotonic() - start
    result.out = result.stdout + result.stderr
    return result


def test_profile_passes_a_rules_threads_to_sbatch(tmp_path):
    """Without `cores` in the profile Snakemake caps `threads` (so --cpus-per-task) at the login
    node's cores; the dry run shows what each job would ask for. No SLURM needed."""
    threads = os.cpu_count() + 6  # more than this machine has
    extra = tmp_path / "threads.yaml"
    extra.write_text(f"training: {{threads: {threads}}}\n")
    result = snakemake(tmp_path, [REPO / "config" / "tiny.yaml", extra], [*SLURM_OVERRIDES, "-n", WEIGHTS])
    assert result.returncode == 0, result.out[-3000:]
    job = result.out.split("rule train_stage1:", 1)[1].split("\n\n", 1)[0]
    assert f"threads: {threads}" in job, job


def partition_env() -> dict:
    """This environment with PARTITION_ENV as the only CESYNTH_ settings."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("CESYNTH_")}, **PARTITION_ENV}


def dry_run_jobs(out: str) -> list[dict]:
    """Every job of a dry run's output, the members of group jobs included: rule, group, threads, resources
    and whether it has outputs (target rules have none)."""
    jobs, group = [], None
    for line in out.splitlines():
        header = re.search(r"Group job (\S+) \(", line)
        start = re.match(r"(\s*)(?:local)?rule (\w+):$", line)
        if header:
            group = header.group(1)
        elif start:
            group = group if start.group(1) else None  # group members are indented
            jobs.append({"rule": start.group(2), "group": group, "threads": 1, "resources": {}, "output": False})
        elif jobs:
            field, _, value = line.strip().partition(": ")
            if field == "threads":
                jobs[-1]["threads"] = int(value)
            elif field == "resources":
                jobs[-1]["resources"] = dict(item.split("=", 1) for item in value.split(", "))
            elif field == "output":
                jobs[-1]["output"] = True
    return jobs


@pytest.fixture(scope="module")
def profile_dry_runs(tmp_path_factory) -> dict[str, list[dict]]:
    """{config: jobs} of the profile's dry run of the studies and of predict (one new patient) under each of
    TABLE_CONFIGS, with a CPU and a GPU partition named. No SLURM needed."""
    folder = tmp_path_factory.mktemp("profile_dry_run")
    predict = folder / "predict.yaml"
    predict.write_text(f"predict: {{samplesheet: {predict_sheet(folder / 'new')}, model: hrfcn3d}}\n")
    # paper.yaml names no cohort (it stops without one): the phantom stands in, the requests do not depend on it
    phantom = folder / "phantom.yaml"
    phantom.write_text("input: {source: demo}\n")
    runs = {}
    for name, configs in TABLE_CONFIGS.items():
        work = folder / name.replace("/", "_")
        work.mkdir()
        result = snakemake(work, [*configs, phantom, predict], [*SLURM_OVERRIDES, "-n", "all", "predict"],
                           env=partition_env())
        assert result.returncode == 0, result.out[-3000:]
        runs[name] = dry_run_jobs(result.out)
    return runs


def test_every_job_that_asks_for_a_gpu_goes_to_the_gpu_partition(profile_dry_runs):
    for name, jobs in profile_dry_runs.items():
        assert {j["rule"] for j in jobs if j["resources"].get("gpu") == "1"} == GPU_RULES, name
        wrong = [(j["rule"], j["resources"]) for j in jobs
                 if j["resources"]["slurm_partition"] != (GPU_PARTITION if "gpu" in j["resources"] else CPU_PARTITION)]
        assert not wrong, (name, wrong)


def test_set_resources_for_a_gpu_rule_keeps_its_partition_unless_it_names_one(tmp_path):
    """More memory for train_stage1 must not send it to the CPU partition; a partition named for train_stage2 wins."""
    result = snakemake(tmp_path, [REPO / "config" / "tiny.yaml"], [
        *SLURM_OVERRIDES, "--set-resources", "train_stage1:mem_mb=1234", "train_stage2:slurm_partition='short'",
        "-n", WEIGHTS.replace("stage1", "stage2")], env=partition_env())
    assert result.returncode == 0, result.out[-3000:]
    jobs = {j["rule"]: j["resources"] for j in dry_run_jobs(result.out)}
    assert jobs["train_stage1"]["mem_mb"] == "1234" and jobs["train_stage1"]["slurm_partition"] == GPU_PARTITION
    assert jobs["train_stage2"]["slurm_partition"] == "short" and jobs["split"]["slurm_partition"] == CPU_PARTITION


def rule_table(runs: dict[str, list[dict]]) -> str:
    """The table of profiles/slurm/README.md: what each rule's jobs ask for under the first configuration of
    ``runs`` ({config: dry-run jobs}), and under another where that differs; rules asking alike share a row."""
    base = next(iter(runs))
    asks = {}  # rule -> config -> {(threads, mem_mb, runtime)}
    kind = {}  # rule -> (group, partition)
    for config, jobs in runs.items():
        for job in filter(lambda j: j["output"], jobs):
            res = job["resources"]
            asks.setdefault(job["rule"], {}).setdefault(config, set()).add(
                (job["threads"], int(res["mem_mb"]), int(res["runtime"])))
            kind[job["rule"]] = (job["group"] or "", "GPU" if "gpu" in res else "CPU")

    def cell(by_config, i):
        def values(config):
            found = sorted({ask[i] for ask in by_config[config]})
            return str(found[0]) if len(found) == 1 else f"{found[0]}-{found[-1]}"
        others = [f"{c}: {values(c)}" for c in by_config if values(c) != values(base)]
        return values(base) + (f" ({'; '.join(others)})" if others else "")

    rows = {}
    for rule, by_config in asks.items():
        rows.setdefault((kind[rule][1], kind[rule][0], *(cell(by_config, i) for i in range(3))), []).append(rule)
    partition = {"CPU": "`CESYNTH_SLURM_PARTITION`", "GPU": "`CESYNTH_SLURM_GPU_PARTITION`, `gpu=1`"}
    lines = ["| rules | threads | mem_mb | runtime (min) | group job | partition |", "|---|---|---|---|---|---|"]
    for (device, group, threads, mem, runtime), rules in sorted(rows.items(), key=lambda r: (r[0][:2], sorted(r[1]))):
        lines.append(f"| {', '.join(sorted(rules))} | {threads} | {mem} | {runtime} | {group} | {partition[device]} |")
    return "\n".join(lines) + "\n"


def test_the_profile_readme_tabulates_what_the_rules_ask_for(profile_dry_runs):
    readme = (REPO / "profiles" / "slurm" / "README.md").read_text()
    expected = rule_table(profile_dry_runs)
    found = RULE_TABLE.search(readme)
    assert found and found.group(1) == expected, f"profiles/slurm/README.md, the rule table is now:\n{expected}"
