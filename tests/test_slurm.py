"""`snakemake --profile profiles/slurm` against a real single-node SLURM cluster started here.

The cluster (munged, slurmctld, slurmd from Debian's slurm-wlm; one node with its real CPUs and
memory and a count-only GPU) is brought up by tests/slurm_cluster.py and torn down afterwards.
The preprocessing of the tiny demo cohort runs locally first (it is slow and CPU-only); then the
`split` rule (CPU) and `train_stage1` of one model (GPU) go through sbatch with the real profile,
and a broken input makes the `validate_inputs` job fail inside SLURM.

The cluster has neither conda nor job accounting, as many small clusters: the profile needs neither
(no conda unless `--sdm conda`; job status from squeue). The README's cluster command runs the whole
tiny study as printed (test_readme_cluster_command_runs_the_tiny_study). Test-only overrides of the
profile in the other tests: a 5 s first status check, `--slurm-no-account`, `--retries 0`, and
`--slurm-keep-successful-logs` so the logs of finished jobs can be read. What each job asks for (dry runs, no
SLURM needed) is tested in tests/test_slurm_routing.py.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cesynth.inputs.cohort import load_samples
from conftest import REPO, nan_copy
from docs_commands import SLURM_PROFILE, documented_commands, fresh_clone, run_command, tiny_configfile, user_env
from slurm_cluster import CPU_PARTITION, GPU_PARTITION, LocalSlurm, skip_reason
from test_slurm_routing import MODEL, PARTITION_ENV, SLURM_OVERRIDES, WEIGHTS, snakemake

pytestmark = pytest.mark.slurm

TRAIN_MEM_MB = 16000  # rules/train.smk: train_stage1 resources mem_mb
TRAIN_THREADS = 2  # training.threads below -> train_stage1 threads -> sbatch --cpus-per-task
# Three single-scan patients: one in each of train, test_A and B (fewer skull strips to run locally).
SMALL_COHORT = f"demo: {{patients: 3, followups: 0, expert_masks: 1}}\ntraining: {{threads: {TRAIN_THREADS}}}\n"
SLURM_RUN_TIMEOUT_S = 300

REASON = skip_reason()
if REASON:
    print(f"\ntests/test_slurm.py skipped: {REASON}", file=sys.stderr)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if REASON:
        pytest.skip(REASON)
    c = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        c.start()
        yield c
    finally:
        c.stop()
        assert not c.running(), f"SLURM daemons still up after tear-down: {c.running()}"


def job_env(cluster) -> dict:
    env = cluster.env()
    # sbatch jobs run `python -m snakemake` with this interpreter; scripts find its venv first on PATH.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env["PATH"]])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(PARTITION_ENV)
    env.pop("CESYNTH_SLURM_ACCOUNT", None)
    env.pop("CESYNTH_GPU_MODEL", None)
    return env


@pytest.fixture(scope="module")
def preprocessed(tmp_path_factory):
    """The tiny cohort preprocessed and split locally (no SLURM): everything train_stage1 needs."""
    if REASON:
        pytest.skip(REASON)
    work = tmp_path_factory.mktemp("slurm_work")
    small = work.parent / "small_cohort.yaml"
    small.write_text(SMALL_COHORT)
    configs = [REPO / "config" / "tiny.yaml", small]
    result = snakemake(work, configs, ["--omit-from", "train_stage1", "--cores", "2", WEIGHTS])
    assert result.returncode == 0, result.out[-5000:]
    assert not (work / WEIGHTS).exists()
    return work, configs


def stage1_minutes(configs) -> int:
    """The time limit train_stage1 asks for under ``configs`` (merged over config.yaml), from the study's formula."""
    from snakemake.utils import update_config

    from cesynth.pipeline import plans

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    for path in configs:
        update_config(config, yaml.safe_load(Path(path).read_text()))
    return plans.training_minutes(plans.model_settings(config, MODEL), "stage1")


def sbatch_calls(log: str) -> dict[str, str]:
    """`sbatch call:` lines (Snakemake --verbose) by their --comment (rule_<name>[_wildcards_<w>])."""
    calls = {}
    for line in log.splitlines():
        if "sbatch call:" in line:
            call = line.split("sbatch call:", 1)[1].strip()
            comment = re.search(r"--comment (\S+)", call).group(1).strip("'")
            calls[comment] = call
    return calls


def submissions(log: str) -> dict[str, tuple[str, Path]]:
    """SLURM job id and SLURM log of each submitted job, by rule name."""
    found = {}
    for jobid, path in re.findall(r"has been submitted with SLURM jobid (\d+) \(log: (\S+)\)\.", log):
        found[re.search(r"slurm_logs/rule_([^/]+)/", path).group(1)] = (jobid, Path(path))
    return found


def without_resources(call: str) -> str:
    """The sbatch options, without the --wrap'ed Snakemake command (which names every rule)."""
    return call.split(" --wrap=", 1)[0]


def test_cpu_and_gpu_rules_run_through_sbatch(cluster, preprocessed):
    work, configs = preprocessed
    env = job_env(cluster)
    extra = []
    node_mem, node_cpus = int(cluster.node["RealMemory"]), int(cluster.node["CPUs"])
    train_mem = TRAIN_MEM_MB
    if node_mem < TRAIN_MEM_MB:  # a smaller CI machine: keep the request schedulable
        train_mem = node_mem
        extra += ["--set-resources", f"train_stage1:mem_mb={node_mem}"]  # stays in the GPU partition
    if node_cpus < TRAIN_THREADS:
        extra += ["--set-threads", f"train_stage1={node_cpus}"]
    split_before = (work / "results" / "split.tsv").read_text()

    result = snakemake(work, configs, [*SLURM_OVERRIDES, *extra, "--forcerun", "split",
                                       "--slurm-init-seconds-before-status-checks", "5", WEIGHTS], env=env,
                       timeout=SLURM_RUN_TIMEOUT_S, cluster=cluster)
    log = result.out
    print(f"\nSLURM run: {result.seconds:.0f} s")
    assert result.returncode == 0, log[-8000:]

    # Both jobs went through sbatch, with the profile's and the rules' resources.
    calls = sbatch_calls(log)
    train_call = f"rule_train_stage1_wildcards_{MODEL}_1"  # wildcards model, stage
    assert set(calls) == {"rule_split", train_call}, list(calls)
    cpu = without_resources(calls["rule_split"])
    gpu = without_resources(calls[train_call])
    print(f"CPU rule: {cpu}\nGPU rule: {gpu}")
    assert f"-p {CPU_PARTITION}" in cpu and "-t 30" in cpu and "--mem 4000" in cpu
    assert "--cpus-per-task=1" in cpu and "--ntasks=1" in cpu
    assert "gpu" not in cpu.replace(f"-p {CPU_PARTITION}", "").replace("--job-name", "").lower(), cpu
    assert "--gpus=1" in gpu and "--ntasks-per-gpu=1" in gpu, gpu
    assert f"-p {GPU_PARTITION}" in gpu and f"-t {stage1_minutes(configs)} " in gpu and f"--mem {train_mem}" in gpu
    assert f"--cpus-per-task={min(TRAIN_THREADS, node_cpus)}" in gpu  # the rule's threads, not capped at 1
    assert "-A " not in cpu and "-A " not in gpu  # no account on this cluster
    assert f"-D {work}" in cpu and "--deployment-method conda" not in calls["rule_split"]  # opt-in: --sdm conda
    assert f"{sys.executable} -m snakemake" in calls["rule_split"]

    # Real SLURM job ids, each with its SLURM log under .snakemake/slurm_logs/.
    subs = submissions(log)
    assert set(subs) == {"split", "train_stage1"}, subs
    for rule, (jobid, slurm_log) in subs.items():
        assert slurm_log.is_relative_to(work / ".snakemake" / "slurm_logs" / f"rule_{rule}"), slurm_log
        assert slurm_log.name == f"{jobid}.log" and slurm_log.is_file()
        text = slurm_log.read_text(errors="replace")
        assert f"rule {rule}:" in text and "1 of 1 steps (100%) done" in text, text[-3000:]
        job = cluster.run("scontrol", "show", "job", jobid).stdout
        assert "JobState=COMPLETED" in job and f"Comment=rule_{rule}" in job, job
        if rule == "train_stage1":
            assert f"Partition={GPU_PARTITION}" in job and "TresPerJob=gres:gpu:1" in job, job
            assert "'CUDA_VISIBLE_DEVICES': '0'" in text  # SLURM bound the (count-only) GPU
        else:
            assert f"Partition={CPU_PARTITION}" in job and "gpu" not in job.split("TRES=")[1].split()[0]
            assert "CUDA_VISIBLE_DEVICES" not in text

    # Outputs: the same split, trained weights, one epoch of history, the rule log and benchmark.
    results = work / "results"
    assert (results / "split.tsv").read_text() == split_before
    assert (work / WEIGHTS).stat().st_size > 1000
    history = pd.read_csv(results / "models" / MODEL / "stage1" / "history.tsv", sep="\t")
    assert len(history) == 1 and np.isfinite(history.select_dtypes("number").to_numpy()).all()
    assert (results / "logs" / "train_stage1" / f"{MODEL}.log").is_file()
    bench = pd.read_csv(results / "benchmarks" / "train_stage1" / f"{MODEL}.tsv", sep="\t")
    assert len(bench) == 1 and bench.s.iloc[0] > 0

    # Nothing left to do for that target.
    again = snakemake(work, configs, ["--cores", "1", "-n", WEIGHTS])
    assert "Nothing to be done" in again.out, again.out[-3000:]


def test_failing_job_is_reported_with_its_slurm_log(cluster, preprocessed, tmp_path):
    """A NaN voxel in one scan: validate_inputs fails inside its SLURM job, Snakemake names the log."""
    work, configs = preprocessed
    demo = work / "results" / "demo"
    # absolute paths: the broken sheet lives elsewhere
    sheet = load_samples({"source": "samplesheet", "samplesheet": str(demo / "samples.tsv")}, {}, None)
    sheet.loc[0, "adc"] = nan_copy(sheet.adc[0], tmp_path / "nan_adc.nii.gz")
    sheet.to_csv(tmp_path / "broken.tsv", sep="\t", index=False)

    fail_work = tmp_path / "work"
    result = snakemake(fail_work, configs, [
        *SLURM_OVERRIDES,
        "--config", f"input={{'source': 'samplesheet', 'samplesheet': '{tmp_path / 'broken.tsv'}'}}",
        "--slurm-init-seconds-before-status-checks", "5", "results/qc/inputs_validated.tsv",
    ], env=job_env(cluster), timeout=SLURM_RUN_TIMEOUT_S, cluster=cluster)
    log = result.out
    print(f"\nfailing SLURM run: {result.seconds:.0f} s")
    assert result.returncode != 0, log[-5000:]
    subs = submissions(log)
    assert set(subs) == {"validate_inputs"}, log[-5000:]
    jobid, slurm_log = subs["validate_inputs"]
    assert "gpu" not in without_resources(sbatch_calls(log)["rule_validate_inputs"]).split("--comment")[1]
    assert "Error in rule validate_inputs" in log
    assert f"SLURM-job '{jobid}' failed, SLURM status is: 'FAILED'" in log, log[-5000:]
    assert str(slurm_log) in log  # the SLURM log is named next to the rule log
    assert slurm_log.is_file() and "Error in rule validate_inputs" in slurm_log.read_text(errors="replace")
    rule_log = (fail_work / "results" / "logs" / "validate_inputs" / "all.log").read_text()
    assert f"scan {sheet.scan[0]} ({tmp_path / 'nan_adc.nii.gz'}): adc: 1 voxel(s) are NaN" in rule_log
    assert "JobState=FAILED" in cluster.run("scontrol", "show", "job", jobid).stdout
    assert not (fail_work / "results" / "qc" / "inputs_validated.tsv").exists()


# The README's cluster command, run as printed on the tiny study (CESYNTH_CONFIGFILE; three
# single-scan patients so that the two CPUs of this node get through it in minutes).
README_SLURM_COMMANDS = sorted({c for _, c in documented_commands() if SLURM_PROFILE in c})
README_RUN_TIMEOUT_S = 1800


@pytest.mark.slow  # the whole tiny study through sbatch: ~8 min on 2 cores
@pytest.mark.parametrize("command", README_SLURM_COMMANDS)
def test_readme_cluster_command_runs_the_tiny_study(cluster, tmp_path, command):
    clone = fresh_clone(tmp_path / "clone")
    env = user_env(clone, **{k: v for k, v in job_env(cluster).items() if k.startswith(("CESYNTH_", "SLURM_"))},
                   CESYNTH_CONFIGFILE=tiny_configfile(clone), PATH=job_env(cluster)["PATH"])
    try:
        result = run_command(command, clone, env, timeout=README_RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        queue = cluster.run("squeue", "-t", "all", "-o", "%i %j %T %r %C %m", check=False).stdout
        pytest.fail(f"{command!r} did not finish in {README_RUN_TIMEOUT_S}s\nsqueue:\n{queue}\n"
                    f"{(e.stdout or b'')[-6000:]!r}")
    print(f"\n{command}: {result.seconds:.0f} s")
    assert result.returncode == 0, result.out[-8000:]
    assert "Conda environments: ignored" in result.out and "conda info" not in result.out  # no conda needed

    # Every study finished; the scans went through sbatch as one group job each.
    for study in ("baselines", "ablation_inputs", "ablation_local_loss"):
        assert (clone / "results" / "studies" / study / "summary.html").stat().st_size > 1000
    groups = re.findall(r"Job [0-9a-f-]+ has been submitted with SLURM jobid (\d+) \(log: (\S+/group_scan\S*/\S+)\)",
                        result.out)
    assert len(groups) == 3, result.out[-5000:]  # one per scan
    node_cpus, node_mem = int(cluster.node["CPUs"]), int(cluster.node["RealMemory"])
    for jobid, _ in groups:
        job = cluster.run("scontrol", "show", "job", jobid).stdout
        assert "JobState=COMPLETED" in job, job
        cpus = int(re.search(r"NumCPUs=(\d+)", job).group(1))
        mem = int(re.search(r"MinMemoryNode=(\d+)M", job).group(1))
        # the profile's cap: at most two 4000 MB rules at once, within this 2-CPU node
        assert cpus <= min(2, node_cpus) and mem <= 8000, job
    print(f"group jobs: {len(groups)}, total sbatch jobs: {result.out.count('has been submitted with SLURM jobid')}")


def test_a_job_no_node_can_run_stops_before_any_submission(cluster, tmp_path):
    """SLURM would accept it and leave it pending for ever; the run stops in seconds, naming it."""
    too_big = int(cluster.node["RealMemory"]) * 2
    result = snakemake(tmp_path, [REPO / "config" / "tiny.yaml"], [
        *SLURM_OVERRIDES, "--set-resources", f"train_stage1:mem_mb={too_big}",
        "--slurm-init-seconds-before-status-checks", "5", WEIGHTS,  # a single-valued option before the target
    ], env=job_env(cluster), timeout=120, cluster=cluster)
    assert result.returncode != 0
    assert "has been submitted" not in result.out and not (tmp_path / "results").exists(), result.out[-3000:]
    lines = [l for l in result.out.splitlines() if l.startswith("SLURM: ")]
    assert len(lines) == 1, result.out[-3000:]
    line = lines[0]
    # (more memory from --set-resources keeps a GPU rule in the GPU partition:
    # cesynth.pipeline.slurmfit.route_gpu_rules)
    assert line.startswith(f"SLURM: rule train_stage1 (model={MODEL}, stage=1) asks for 1 CPUs, {too_big} MB, 1 GPUs "
                           f"but no node of partition '{GPU_PARTITION}' has that (largest: {cluster.node['CPUs']} CPUs, "
                           f"{cluster.node['RealMemory']} MB, 1 GPUs)"), line
    assert "--set-resources train_stage1:mem_mb=N" in line and "Traceback" not in result.out
    print(f"\nrefused in {result.seconds:.0f} s")
