"""A run killed mid-way (a node crash: SIGKILL to every process, no chance to clean up) resumes the
way a user would, with `snakemake --unlock` and `--rerun-incomplete`: finished preprocessing is not
redone, nothing half-written survives, and the killed training job continues from its last
checkpoint instead of starting over."""

import os
import re
import signal
import subprocess
import time

import pandas as pd
import torch
import yaml

from conftest import REPO
from test_workflow import snakemake, snakemake_command

MODEL = "hrfcn3d"
EPOCHS = 30  # its stage 1: long enough to be killed between two of its per-epoch checkpoints
RESUME = {"models": {MODEL: {"stage1": {"epochs": EPOCHS}}},
          "demo": {"patients": 3, "followups": 0}}  # the smallest split (train, test_A, B): less to wait for


def wait_for(predicate, timeout, proc, log):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        assert proc.poll() is None, f"snakemake ended ({proc.returncode}) before the kill:\n{log.read_text()[-3000:]}"
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint after {timeout} s:\n{log.read_text()[-3000:]}")


def finished_files(folder):
    """(inode, mtime) of every file under ``folder``: redoing a file changes them (writes are atomic renames)."""
    return {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


def test_killed_run_resumes_from_its_checkpoint_without_redoing_finished_work(tmp_path):
    work, results = tmp_path / "work", tmp_path / "work" / "results"
    resume = tmp_path / "resume.yaml"
    resume.write_text(yaml.safe_dump(RESUME))
    configs = [REPO / "config" / "tiny_fast.yaml", resume]
    target = f"results/models/{MODEL}/metrics.tsv"  # both stages, inference and metrics of one model
    stage1 = results / "models" / MODEL / "stage1"
    checkpoint = stage1 / "checkpoints" / "last.pt"

    log = tmp_path / "killed.log"
    with open(log, "w") as out:  # one job at a time: when training runs, every other job has finished
        proc = subprocess.Popen(snakemake_command(work, "--cores", "1", target, configs=configs), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for(checkpoint.exists, 600, proc, log)
            os.killpg(proc.pid, signal.SIGKILL)  # snakemake and its running job, like a node going down
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    preprocessed = finished_files(results / "preproc")
    killed_at = checkpoint.stat().st_mtime_ns
    split = pd.read_csv(results / "split.tsv", sep="\t")
    training_scans = split.scan[split.set != "B"]  # train_stage1's inputs, so finished before it started
    assert all(results / "preproc" / s / f"{s}_desc-preproc.npy" in preprocessed for s in training_scans)
    assert not (stage1 / "weights.pt").exists() and not (stage1 / "history.tsv").exists()  # killed mid-stage

    blocked = snakemake(work, "--cores", "1", target, check=False, configs=configs)
    assert blocked.returncode != 0 and "--unlock" in blocked.stdout + blocked.stderr  # says how to go on
    snakemake(work, "--unlock", configs=configs)
    assert checkpoint.stat().st_mtime_ns == killed_at  # the kill really stopped training
    killed_epoch = torch.load(checkpoint)["epoch"]  # epochs done before the kill
    assert 1 <= killed_epoch < EPOCHS
    snakemake(work, "--cores", "2", "--rerun-incomplete", target, configs=configs)

    # preprocessing finished before the kill was not redone: same files, not rewritten
    assert {p: s for p, s in finished_files(results / "preproc").items() if p in preprocessed} == preprocessed
    # the checkpoint directory is no declared output, so Snakemake kept it and training went on from it
    train_log = (results / "logs" / "train_stage1" / f"{MODEL}.log").read_text()
    resumed = re.search(r"resuming from \S+/last\.pt: epoch (\d+)", train_log)
    assert resumed and int(resumed.group(1)) == killed_epoch + 1, train_log[-2000:]
    history = pd.read_csv(stage1 / "history.tsv", sep="\t")
    assert list(history.epoch) == list(range(1, EPOCHS + 1))  # every epoch once: none lost, none repeated
    # nothing half-written: every model file loads, no temporary file of an interrupted write is left
    for weights in (results / "models" / MODEL).rglob("*.pt"):
        assert torch.load(weights), weights
    assert not list(results.rglob(".*"))
    metrics = pd.read_csv(results / "models" / MODEL / "metrics.tsv", sep="\t")
    assert set(metrics.scan) == set(split.scan[split.set != "train"]) and metrics.psnr_brain.notna().all()
