"""Training on small synthetic stacks: learning, determinism, kill-and-resume, SIGTERM checkpoints."""

import os
import signal
import subprocess
import sys

from dataclasses import asdict

import pandas as pd
import pytest
import torch

from cesynth.nets import device
from cesynth.nets.device import CPU_BF16_MAX_SLICE_VOXELS, cpu_bf16_kind, cpu_bf16_training
from cesynth.train.data import PatchSampler, StepBatches
from cesynth.train.training import TRAINERS, Collapsed, Interrupted, StageJob, StageTrainer, TrainingSettings, \
    register_trainer, run_distributed, train_stage
from cesynth.nets.weights import load_weights

# The reference-style 3D U-Net: no batch statistics, so data parallelism is exact (test below)
SPEC = {"architecture": "unet3d_plain", "inputs": ["t1", "t2", "adc"], "width": 0.0625}


def settings(epochs=2, steps=4, lr=3e-3, **extra) -> dict:
    """The fields of a TrainingSettings for these small runs (TrainingSettings.plain: float32, the default memory
    layout, uniform patches), as a dict the tests change."""
    stage = {"lambdas": [1.0, 1.0, 1.0], "lr": lr, "epochs": epochs}
    return {**asdict(TrainingSettings.plain(seed=7, steps_per_epoch=steps, stage1=stage, stage2=stage)), **extra}


def job(stacks, out, s, **kw):
    """A stage-1 job of SPEC on three training stacks (the rest validate), writing under ``out``."""
    return StageJob(**{"train_stacks": stacks[:3], "val_stacks": stacks[3:], "model_spec": SPEC, "stage": s["stage1"],
                       "training": TrainingSettings(**s), "weights_out": out / "w.pt", "history_out": out / "h.tsv",
                       "checkpoint_dir": out / "ckpt", "device": "cpu", "progress": False, **kw})


def run(stacks, out, on_step=None, **kw):
    return train_stage(job(stacks, out, settings(**kw)), log=lambda *_: None, on_step=on_step)


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
    checkpoint = torch.load(resumed / "ckpt" / "last.pt")
    assert (checkpoint["epoch"], checkpoint["step"]) == (1, 2)  # saved right after the step it was signalled in
    assert not (resumed / "w.pt").exists()  # no final weights from an unfinished stage

    run(stacks, resumed, epochs=2, steps=5)
    assert_same_weights(weights(tmp_path / "straight" / "w.pt"), weights(resumed / "w.pt"))


def test_changed_configuration_does_not_resume_stale_checkpoint(stacks, tmp_path):
    torch.set_num_threads(1)
    run(stacks, tmp_path, epochs=1, steps=2)
    old = weights(tmp_path / "w.pt")
    # Same checkpoint dir, other learning rate: resuming would find epoch 1 done and keep the old weights.
    history = run(stacks, tmp_path, epochs=1, steps=2, lr=1e-4)
    [stale] = (tmp_path / "ckpt").glob("stale-*.pt")
    assert_same_weights(torch.load(stale)["model"], old)  # the old checkpoint, kept aside
    # ...and training restarted from step 0: the same weights and history as a fresh run at the new rate
    run(stacks, tmp_path / "fresh", epochs=1, steps=2, lr=1e-4)
    assert_same_weights(weights(tmp_path / "w.pt"), weights(tmp_path / "fresh" / "w.pt"))
    assert [row["epoch"] for row in history] == [1] and history[0]["lr"] == 1e-4
    assert any(not torch.equal(old[k], v) for k, v in weights(tmp_path / "w.pt").items())


def test_the_trainer_is_chosen_by_name_and_sets_its_state_in_init(stacks, tmp_path):
    @register_trainer
    class RecordingTrainer(StageTrainer):
        """A variant that records its steps, and which attributes exist after __init__ and at the end."""
        steps_taken, attributes = [], {}

        def __init__(self, job, log=print):
            super().__init__(job, log)
            self.attributes["init"] = set(vars(self))

        def train_step(self, batch):
            self.steps_taken.append((self.epoch, self.step))
            return super().train_step(batch)

        def on_train_end(self):
            self.attributes["end"] = set(vars(self))
            super().on_train_end()

    try:
        run(stacks, tmp_path / "variant", epochs=1, steps=2, trainer="RecordingTrainer")
    finally:
        del TRAINERS["RecordingTrainer"]
    assert RecordingTrainer.steps_taken == [(0, 0), (0, 1)]
    assert RecordingTrainer.attributes["end"] == RecordingTrainer.attributes["init"]  # nothing added on the way
    assert "net" not in RecordingTrainer.attributes["init"]  # one name for the training net: model
    # the variant changed nothing else: the same weights as the default trainer's
    run(stacks, tmp_path / "default", epochs=1, steps=2)
    assert_same_weights(weights(tmp_path / "variant" / "w.pt"), weights(tmp_path / "default" / "w.pt"))
    with pytest.raises(ValueError, match="training.trainer 'Nope' is not a registered trainer; known: StageTrainer"):
        run(stacks, tmp_path / "unknown", epochs=1, steps=1, trainer="Nope")


def kill_mid_write(path):
    """A real process killed by SIGKILL (as in a node crash) halfway through an atomic write of ``path``."""
    code = ("import os, signal, sys\nfrom cesynth.io import atomic_output\n"
            "with atomic_output(sys.argv[1]) as tmp:\n"
            "    tmp.write_bytes(b'half a file')\n    os.kill(os.getpid(), signal.SIGKILL)\n")
    assert subprocess.run([sys.executable, "-c", code, str(path)]).returncode == -signal.SIGKILL


def test_resume_removes_files_a_killed_save_left_half_written(stacks, tmp_path):
    torch.set_num_threads(1)
    run(stacks, tmp_path, epochs=1, steps=1)
    kill_mid_write(tmp_path / "ckpt" / "last.pt")
    kill_mid_write(tmp_path / "w.pt")
    assert len(list(tmp_path.glob("**/.*.pt"))) == 2  # SIGKILL skipped atomic_output's own cleanup

    run(stacks, tmp_path, epochs=1, steps=1)  # the same stage again, as Snakemake's rerun would
    assert not list(tmp_path.glob("**/.*")), "partial files must not pile up over crashes"
    assert torch.load(tmp_path / "ckpt" / "last.pt")["epoch"] == 1  # the whole one is kept


def test_resume_with_dataloader_workers_matches_uninterrupted_run_without(stacks, tmp_path):
    torch.set_num_threads(1)
    run(stacks, tmp_path / "straight", epochs=2, steps=4)

    def kill(epoch, step, terms):
        if (epoch, step) == (0, 2):
            os.kill(os.getpid(), signal.SIGUSR1)

    with pytest.raises(Interrupted):
        run(stacks, tmp_path / "workers", on_step=kill, epochs=2, steps=4, num_workers=2)
    run(stacks, tmp_path / "workers", epochs=2, steps=4, num_workers=2)
    assert_same_weights(weights(tmp_path / "straight" / "w.pt"), weights(tmp_path / "workers" / "w.pt"))


def test_step_batches_depend_only_on_the_step(stacks):
    sampler = PatchSampler(stacks, ["t1", "t2"], "ce_t1", [3, 16, 16])
    resumed = StepBatches(sampler, 2, seed=1, epoch=3, first_step=2, steps=5)
    assert len(resumed) == 3
    for i in range(3):
        for a, b in zip(resumed[i], sampler.random_batch(2, 1, 3, 2 + i)):
            assert torch.equal(a, b)
    # data-parallel shares of a step are the slices of the whole step's batch
    whole = sampler.random_batch(4, 1, 3, 2)
    shares = [sampler.random_batch(2, 1, 3, 2, rank=r, world=2) for r in range(2)]
    for part, full in zip(zip(*shares), whole):
        assert torch.equal(torch.cat(part), full)


def test_channels_last_and_tensorboard(stacks, tmp_path):
    pytest.importorskip("tensorboard")
    torch.set_num_threads(1)
    plain = run(stacks, tmp_path / "plain", epochs=1, steps=2)
    fast = run(stacks, tmp_path / "fast", epochs=1, steps=2, channels_last=True, tensorboard=True)
    # Same training up to float rounding of the other memory layout. Losses, not weights: Adam turns
    # rounding noise in near-zero gradients into whole lr-sized steps (1.5e-4 of the validation loss after
    # one such step, with oneDNN's choice of kernels; a wrong layout would differ by far more).
    for key in ("train_total", "val_total"):
        assert fast[0][key] == pytest.approx(plain[0][key], rel=1e-3)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "fast" / "tensorboard")).Reload()
    assert [e.step for e in events.Scalars("train/total")] == [1, 2]
    assert {"epoch/val_psnr", "epoch/train_total"} <= set(events.Tags()["scalars"])


def test_distributed_data_parallel_on_cpu_matches_one_process_with_the_whole_batch(stacks, tmp_path):
    """Two gloo processes under torchrun, 1 patch each == one process with both patches.

    unet3d_plain has no BatchNorm (per-process statistics would differ) and local_norm "all" makes the
    loss a mean over patches, so averaging the two processes' gradients is exactly the big-batch
    gradient, up to float rounding. The NCCL/GPU path cannot be tested here (no GPU).
    """
    torch.set_num_threads(1)
    s = settings(epochs=1, steps=3)
    s["local_norm"] = "all"
    kwargs = dict(train_stacks=[str(p) for p in stacks[:3]], val_stacks=[str(stacks[3])], model_spec=SPEC,
                  stage=s["stage1"], device="cpu")
    train_stage(StageJob(**kwargs, training=TrainingSettings(**s), weights_out=tmp_path / "one.pt",
                         history_out=tmp_path / "one.tsv", checkpoint_dir=tmp_path / "ckpt1"), log=lambda *_: None)
    run_distributed(2, StageJob(**kwargs, training=TrainingSettings(**{**s, "batch_size": 1}),
                                weights_out=str(tmp_path / "two.pt"),
                                history_out=str(tmp_path / "two.tsv"), checkpoint_dir=str(tmp_path / "ckpt2")))
    one, two = (pd.read_csv(tmp_path / f"{n}.tsv", sep="\t").iloc[0] for n in ("one", "two"))
    for key in ("train_total", "train_local", "val_total"):  # losses: see test_channels_last_and_tensorboard
        assert two[key] == pytest.approx(one[key], rel=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine): bf16 autocast, "
                    "cudnn.benchmark, pinned-memory workers and channels_last are only exercised on a GPU runner")
def test_cuda_training_with_all_gpu_options(stacks, tmp_path):
    s = settings(epochs=1, steps=2)
    s.update(amp=True, num_workers=2, channels_last=True)
    train_stage(job(stacks, tmp_path, s, device="cuda"), log=lambda *_: None)
    assert torch.backends.cudnn.benchmark
    assert all(torch.isfinite(v).all() for v in weights(tmp_path / "w.pt").values())


def test_validation_psnr_is_the_test_metric(stacks):
    """val_psnr = the test protocol's brain PSNR of whole held-out scans (MAX_I = the target's brain maximum),
    here for a slice-wise net, whose prediction of a slice does not depend on the window it sits in."""
    import numpy as np

    from cesynth.evaluate.metrics import scan_metrics
    from cesynth.infer.inference import sliding_window
    from cesynth.io import Stack
    from cesynth.nets.models import build_model
    from cesynth.train.losses import SynthesisLoss
    from cesynth.train.validation import evaluate_loss

    torch.manual_seed(0)
    model = build_model("unet2d", 2, 0.0625).eval()
    sampler = PatchSampler(stacks[:2], ["t1", "t2"], "ce_t1", (3, 32, 32))
    val_psnr = evaluate_loss(model, sampler, SynthesisLoss(), 2, torch.device("cpu"))["val_psnr"]
    expected, whole_volume = [], []
    for path in stacks[:2]:
        stack = Stack(path)
        pred = np.clip(sliding_window(model, np.ascontiguousarray(stack.get(["t1", "t2"])), 3, 3), 0, 1)
        brain = np.asarray(stack["brain_mask"]) > 0
        target = np.asarray(stack["ce_t1"])
        expected.append(scan_metrics(target, pred, np.asarray(stack["t1"]), brain)["psnr_brain"])
        whole_volume.append(10 * np.log10(1 / np.mean((pred - target) ** 2)))
    # equal but for the few brain slices the last window covers twice
    assert val_psnr == pytest.approx(np.mean(expected), abs=0.05)
    # ...which the old definition (background included, MAX_I = 1) would not have matched
    assert abs(np.mean(whole_volume) - np.mean(expected)) > 1


@pytest.mark.parametrize("lr", [1.0, 1e4])
def test_a_collapsing_net_ends_with_one_message_and_no_weights(stacks, tmp_path, lr):
    """The reference-style U-Net (no batch norm, sigmoid output) at an extreme learning rate goes blank or NaN."""
    torch.set_num_threads(1)
    s = settings(epochs=3, steps=4, lr=lr)
    with pytest.raises(Exception) as caught:
        train_stage(job(stacks, tmp_path, s, name="unet3d_plain stage 1"), log=lambda *_: None)
    assert isinstance(caught.value, Collapsed)
    message = str(caught.value)
    assert message.startswith("unet3d_plain stage 1 collapsed at epoch 1, step ")
    assert ("output is constant" in message or "loss is not finite" in message) and f"now {lr:g}" in message
    assert "output: residual" in message and not (tmp_path / "w.pt").exists()


def test_a_learning_net_is_not_called_collapsed(stacks, tmp_path):
    torch.set_num_threads(1)
    history = run(stacks, tmp_path, epochs=2, steps=3, lr=1e-3)  # would raise Collapsed
    assert len(history) == 2 and (tmp_path / "w.pt").exists()


def test_cpu_bf16_training_learns_like_float32_and_keeps_3d_nets_off_the_patches_that_crash_it(stacks, tmp_path):
    torch.set_num_threads(1)
    plain = run(stacks, tmp_path / "plain", epochs=2, steps=4, channels_last=True)
    bf16 = run(stacks, tmp_path / "bf16", epochs=2, steps=4, channels_last=True, cpu_bf16=True)
    for key in ("train_total", "val_total"):  # bf16 keeps ~3 significant digits: close, and not float32 itself
        assert bf16[-1][key] == pytest.approx(plain[-1][key], rel=0.05)
        assert bf16[-1][key] != plain[-1][key]
    assert bf16[-1]["train_total"] < bf16[0]["train_total"]
    large = {**settings(), "patch": [3, 96, 96]}  # a 9,216-voxel slice: torch 2.13's bf16 3D conv gradient crashes
    with pytest.raises(ValueError, match="at most 4096 voxels"):
        StageTrainer(job(stacks, tmp_path / "large", {**large, "cpu_bf16": True}))
    assert not cpu_bf16_training("auto", False, large["patch"])  # "auto" trains such a 3D net in float32 instead
    assert cpu_bf16_training(True, True, large["patch"])  # 2D convolutions have no such limit
    small = StageTrainer(job(stacks, tmp_path / "small", settings(cpu_bf16="auto")))  # unet3d_plain (SPEC)
    assert isinstance(small.autocast, torch.autocast) == (cpu_bf16_kind() == "amx")
    with pytest.raises(ValueError, match="cpu_bf16 must be one of"):
        cpu_bf16_training("yes", True, large["patch"])


def test_the_bf16_3d_convolution_gradient_at_the_cpu_bf16_limit_runs_and_matches_float32():
    """CPU_BF16_MAX_SLICE_VOXELS rests on where torch 2.13 corrupts the heap (~8,192 voxels per slice): at the limit,
    in a child process (a heap corruption would take pytest down with it), the bf16 weight gradient of a
    channels-last Conv3d runs and stays within bf16 rounding of float32's. A torch that crashes earlier fails here."""
    side = int(CPU_BF16_MAX_SLICE_VOXELS ** 0.5)
    code = f"""
import torch
torch.manual_seed(0); torch.set_num_threads(1)
conv = torch.nn.Conv3d(8, 8, 3, padding=1).to(memory_format=torch.channels_last_3d)
x = torch.rand(3, 8, 3, {side}, {side}).to(memory_format=torch.channels_last_3d)
grads = []
for bf16 in (False, True):
    conv.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        y = conv(x)
    y.float().square().mean().backward()
    grads.append(conv.weight.grad.clone())
print(float((grads[1] - grads[0]).norm() / grads[0].norm()))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert float(done.stdout) < 0.02


@pytest.mark.parametrize("amx, avx512_bf16, cap, kind", [
    (True, True, None, "amx"), (True, True, "AVX512_CORE_BF16", "avx512_bf16"), (True, True, "AVX2", None),
    (False, True, None, "avx512_bf16"), (False, True, "AVX512_CORE_AMX", "avx512_bf16"), (False, False, None, None)])
def test_cpu_bf16_auto_follows_the_isa_that_onednn_may_use(monkeypatch, amx, avx512_bf16, cap, kind):
    """ONEDNN_MAX_CPU_ISA makes a CPU behave like an older one; "auto" trains in bf16 only an architecture shown to
    learn in bf16 on that path (the CPU's flags are what is faked here: this machine has one CPU)."""
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    if cap:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    assert cpu_bf16_kind() == kind
    for architecture in ("unet2d", "unet3d", "unet3d_plain", "hrfcn3d", "hrfcn3d_ref"):
        expected = architecture in device.CPU_BF16_TRAINING_VALIDATED.get(kind, ())
        assert cpu_bf16_training("auto", False, [3, 32, 32], architecture=architecture) == expected
    assert cpu_bf16_training("auto", False, [3, 32, 32], architecture="unet3d_plain") == (kind == "amx")
    assert not cpu_bf16_training("auto", False, [3, 32, 32], architecture="unet3d")  # not yet shown on any path
