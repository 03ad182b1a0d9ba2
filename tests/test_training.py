"""Training on small synthetic stacks: learning, determinism, kill-and-resume, SIGTERM checkpoints."""

import os
import signal

import pandas as pd
import pytest
import torch

from cesynth.training import Interrupted, load_weights, train_stage

SPEC = {"architecture": "unet3d", "inputs": ["t1", "t2", "adc"], "width": 0.0625}


def settings(epochs=2, steps=4, lr=3e-3):
    return {"seed": 7, "batch_size": 2, "patch": [3, 32, 32], "steps_per_epoch": steps, "ssim": "ssim",
            "local_norm": "mask", "target": "ce_t1", "progress": False,
            "stage1": {"lambdas": [1.0, 1.0, 1.0], "lr": lr, "epochs": epochs}}


def run(stacks, out, on_step=None, **kw):
    s = settings(**kw)
    return train_stage(train_stacks=stacks[:3], val_stacks=stacks[3:], model_spec=SPEC, stage=s["stage1"],
                       training=s, weights_out=out / "w.pt", history_out=out / "h.tsv",
                       checkpoint_dir=out / "ckpt", device="cpu", log=lambda *_: None, on_step=on_step)


def weights(path):
    return load_weights(path)[0].state_dict()


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_training_reduces_loss_and_writes_history(stacks, tmp_path):
    torch.set_num_threads(1)
    history = run(stacks, tmp_path, epochs=3, steps=6)
    table = pd.read_csv(tmp_path / "h.tsv", sep="\t")
    assert list(table.epoch) == [1, 2, 3]
    assert table.train_total.iloc[-1] < table.train_total.iloc[0]
    assert {"val_total", "val_psnr", "train_mae", "train_ssim", "train_local"} <= set(table.columns)
    assert history[-1]["val_psnr"] == pytest.approx(table.val_psnr.iloc[-1])


def test_same_seed_same_weights(stacks, tmp_path):
    torch.set_num_threads(1)
    run(stacks, tmp_path / "a", epochs=1, steps=3)
    run(stacks, tmp_path / "b", epochs=1, steps=3)
    assert_same_weights(weights(tmp_path / "a" / "w.pt"), weights(tmp_path / "b" / "w.pt"))


def test_sigterm_saves_checkpoint_and_resume_matches_uninterrupted_run(stacks, tmp_path):
    torch.set_num_threads(1)
    run(stacks, tmp_path / "straight", epochs=2, steps=5)

    resumed = tmp_path / "resumed"

    def kill_mid_epoch(epoch, step, terms):
        if (epoch, step) == (1, 1):  # like SLURM's time-limit warning, a real signal to this process
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(Interrupted, match="rerun to resume"):
        run(stacks, resumed, on_step=kill_mid_epoch, epochs=2, steps=5)
    checkpoint = torch.load(resumed / "ckpt" / "last.pt", weights_only=False)
    assert (checkpoint["epoch"], checkpoint["step"]) == (1, 2)  # saved right after the step it was signalled in
    assert not (resumed / "w.pt").exists()  # no final weights from an unfinished stage

    run(stacks, resumed, epochs=2, steps=5)
    assert_same_weights(weights(tmp_path / "straight" / "w.pt"), weights(resumed / "w.pt"))


def test_changed_configuration_does_not_resume_stale_checkpoint(stacks, tmp_path):
    torch.set_num_threads(1)
    run(stacks, tmp_path, epochs=1, steps=2)
    run(stacks, tmp_path, epochs=1, steps=2, lr=1e-4)  # same checkpoint dir, other learning rate
    assert list((tmp_path / "ckpt").glob("stale-*.pt")), "the old checkpoint must be kept aside, not resumed"
