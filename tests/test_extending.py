"""docs/extending.md, walked through: a toy architecture, skull-strip back-end, normalisation and metric, each
registered from this module the way the document says, then used by the code that would use it in a run."""

import nibabel as nib
import numpy as np
import pytest
import torch

from cesynth.evaluate import metrics
from cesynth.infer.inference import Synthesizer
from cesynth.io import Stack, save_nifti, save_stack
from cesynth.nets import models
from cesynth.nets.weights import load_weights
from cesynth.preprocess import preprocessing, skullstrip
from cesynth.train.training import StageJob, TrainingSettings, train_stage
from test_training import settings


class ToyNet(models.SynthesisNet):
    """docs/extending.md, "A model architecture": one 3x3x3 convolution."""
    architecture = "toy_net"
    size_divisor = 1

    def __init__(self, n_inputs: int, width: float = 1.0, output: str = "direct"):
        super().__init__(n_inputs, output)
        self.conv = torch.nn.Conv3d(n_inputs, 1, 3, padding=1)
        self._init_weights(self.conv)

    def _forward(self, x):
        return self.conv(x)


def test_a_registered_architecture_trains_and_predicts(stacks, tmp_path, monkeypatch):
    monkeypatch.setitem(models.ARCHITECTURES, "toy_net", ToyNet)
    s = settings(epochs=1, steps=1)
    spec = {"architecture": "toy_net", "inputs": ["t1", "t2"], "width": 1.0}
    history = train_stage(StageJob(train_stacks=stacks[:3], val_stacks=stacks[3:], model_spec=spec, stage=s["stage1"],
                                   training=TrainingSettings(**s), weights_out=tmp_path / "w.pt",
                                   history_out=tmp_path / "h.tsv",
                                   checkpoint_dir=tmp_path / "ckpt", device="cpu"), log=lambda *_: None)
    assert len(history) == 1 and np.isfinite(history[0]["val_psnr"])
    model, payload = load_weights(tmp_path / "w.pt")
    assert isinstance(model, ToyNet) and payload["model_spec"] == spec
    pred = Synthesizer(model, payload).write(stacks[3], tmp_path / "synth.nii.gz")
    brain = np.asarray(Stack(stacks[3])["brain_mask"]) > 0
    assert pred[brain].std() > 0 and not pred[~brain].any() and 0 <= pred.min() and pred.max() <= 1
    assert nib.load(tmp_path / "synth.nii.gz").shape == pred.shape[::-1]


def test_a_registered_skullstrip_backend_writes_the_mask(tmp_path, monkeypatch):
    """docs/extending.md, "A skull-strip back-end": a threshold at half the maximum."""
    def half_max(reference_path, settings, scan):
        data = np.asarray(nib.load(str(reference_path)).dataobj)
        return data > 0.5 * data.max()

    monkeypatch.setitem(skullstrip.BACKENDS, "half_max", half_max)
    head = np.zeros((20, 20, 20), np.float32)
    head[4:16, 4:16, 4:16] = 1.0
    head[8:12, 8:12, 8:12] = 3.0
    save_nifti(head, np.diag([2.0, 2.0, 2.0, 1.0]), tmp_path / "ce_t1.nii.gz")
    qc = skullstrip.brain_mask(tmp_path / "ce_t1.nii.gz", tmp_path / "mask.nii.gz",
                               skullstrip.SkullStripSettings(backend="half_max"))
    mask = np.asarray(nib.load(tmp_path / "mask.nii.gz").dataobj)
    assert qc["backend"] == "half_max" and qc["volume_ml"] == pytest.approx(4**3 * 8 / 1000)
    assert mask.sum() == 4**3 and mask[8:12, 8:12, 8:12].all()


def test_a_registered_normalisation_preprocesses_into_the_contract(tmp_path, monkeypatch):
    """docs/extending.md, "A normalisation": divide by the brain maximum; a z-score is refused where the
    stack is written."""
    monkeypatch.setitem(preprocessing.EQUALIZATION_METHODS, "max", lambda values: values / values.max())
    monkeypatch.setitem(preprocessing.EQUALIZATION_METHODS, "zscore",
                        lambda values: (values - values.mean()) / values.std())
    rng = np.random.default_rng(0)
    volume = rng.uniform(10, 20, size=(8, 8, 8)).astype(np.float32)
    brain = np.ones(volume.shape, bool)
    out = preprocessing.equalize(volume, brain, "max")
    np.testing.assert_allclose(out, volume / volume.max(), rtol=1e-6)
    zscore = preprocessing.equalize(volume, brain, "zscore")
    with pytest.raises(ValueError, match=r"channel\(s\) t1 \[-1.*outside the model-space intensity range"):
        save_stack(zscore[None], ["t1"], np.eye(4), tmp_path / "S.npy", tmp_path / "S.json")


def test_a_registered_metric_is_a_column_for_brain_and_tumour(monkeypatch):
    """docs/extending.md, "A metric": the largest absolute error in the region."""
    monkeypatch.setitem(metrics.REGION_METRICS, "max_error",
                        lambda r: float(np.abs(r.gt - r.pred)[r.mask].max()) if r.mask.any() else float("nan"))
    rng = np.random.default_rng(1)
    gt = rng.uniform(0, 1, size=(24, 24, 4))
    pred = gt.copy()
    pred[3, 3, 1] += 0.25
    brain = np.ones(gt.shape, bool)
    tumour = np.zeros(gt.shape, bool)
    tumour[10:14, 10:14, :] = True
    row = metrics.scan_metrics(gt, pred, gt, brain, tumour)
    assert row["max_error_brain"] == pytest.approx(0.25) and row["max_error_tumour"] == 0.0
    assert row["mae_brain"] == pytest.approx(0.25 / gt.size)  # the built-in metrics unchanged beside it
