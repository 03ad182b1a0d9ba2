"""A run killed mid-way (a node crash: SIGKILL, no chance to clean up) resumes the way a user would,
with `snakemake --unlock` and `--rerun-incomplete`: finished scans are not redone, and the training
job that was killed continues from its last checkpoint instead of starting over."""

import os
import re
import signal
import subprocess
import time

import pandas as pd
import torch
import yaml

from conftest import REPO
from test_workflow import SNAKEMAKE, snakemake


def wait_for(predicate, timeout, proc):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        assert proc.poll() is None, f"snakemake ended (exit {proc.returncode}) before the kill"
        time.sleep(0.5)
    raise AssertionError(f"nothing to kill after {timeout} s")


def test_killed_run_resumes_without_redoing_finished_work(tmp_path):
    work = tmp_path / "work"
    longer = tmp_path / "longer.yaml"  # stage 1 long enough to be killed between two checkpoints
    longer.write_text(yaml.safe_dump({"training": {"stage1": {"epochs": 30}}}))
    args = ["--directory", str(work), "--configfile", str(REPO / "config" / "tiny.yaml"), str(longer)]
    with open(tmp_path / "killed.log", "w") as out:
        proc = subprocess.Popen([*SNAKEMAKE, *args, "--cores", "1", "baselines"], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            checkpoint = wait_for(lambda: next(iter((work / "results" / "models").glob("*/stage1/checkpoints/last.pt")),
                                               None), 600, proc)
            resumed_epoch = torch.load(checkpoint, weights_only=False)["epoch"]
            os.killpg(proc.pid, signal.SIGKILL)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    model = checkpoint.parents[2].name
    split = pd.read_csv(work / "results" / "split.tsv", sep="\t")
    used = split.scan[split.set != "B"]  # the killed training job's inputs: all finished
    stacks = {s: work / "results" / "preproc" / s / f"{s}_desc-preproc.npy" for s in used}
    before = {s: p.stat().st_mtime_ns for s, p in stacks.items()}
    weights = work / "results" / "models" / model / "stage1" / "weights.pt"
    assert not weights.exists()  # the stage was killed before it finished

    blocked = snakemake(work, "--cores", "1", "baselines", check=False, configs=[longer])
    assert blocked.returncode != 0 and "--unlock" in blocked.stdout + blocked.stderr  # says how to go on
    snakemake(work, "--unlock", configs=[longer])
    snakemake(work, "--cores", "2", "--rerun-incomplete", "baselines", configs=[longer])

    assert {s: p.stat().st_mtime_ns for s, p in stacks.items()} == before  # no finished scan redone
    log = (work / "results" / "logs" / "train_stage1" / f"{model}.log").read_text()
    resumed = re.search(r"resuming from \S+/last\.pt: epoch (\d+)", log)
    assert resumed and int(resumed.group(1)) > resumed_epoch, log[-2000:]  # a checkpoint from before the kill
    history = pd.read_csv(work / "results" / "models" / model / "stage1" / "history.tsv", sep="\t")
    assert len(history) == 30  # every epoch once: none lost, none repeated
    assert torch.load(weights, weights_only=False)  # a whole, readable file
    metrics = pd.read_csv(work / "results" / "studies" / "baselines" / "metrics.tsv", sep="\t")
    assert set(metrics.model) == {"unet2d", "hrfcn3d"} and metrics.psnr_brain.notna().all()
