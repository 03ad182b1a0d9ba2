"""Weight files are data: read without running code; a pickled object or a foreign file is refused."""

import pickle
from pathlib import Path

import pytest
import torch

from cesynth.nets.models import build_model
from cesynth.nets.weights import UnsafeWeights, load_weights, read_payload, safe_load, save_weights

SPEC = {"architecture": "hrfcn3d", "inputs": ["t1", "t2"], "width": 0.0625}


class Planted:
    """An object whose unpickling would create a file: what a malicious weights file does with os.system."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (Path(self.marker),)


def trained(tmp_path) -> Path:
    model = build_model("hrfcn3d", 2, 0.0625)
    save_weights(model, SPEC, [{"epoch": 1, "train_total": 0.5}], tmp_path / "w.pt", target="ce_t1", patch=[3, 32, 32],
                 preprocessing={"shape": [32, 32, 32]})
    return tmp_path / "w.pt"


def test_weights_round_trip_through_the_safe_loader(tmp_path):
    model, payload = load_weights(trained(tmp_path))
    assert payload["model_spec"] == SPEC and payload["history"] == [{"epoch": 1, "train_total": 0.5}]
    assert not model.training


def test_a_pickled_object_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "code_ran"
    payload = torch.load(trained(tmp_path))
    payload["history"] = Planted(marker)
    torch.save(payload, tmp_path / "evil.pt")
    with pytest.raises(UnsafeWeights) as refused:
        load_weights(tmp_path / "evil.pt")
    message = str(refused.value)
    assert len(message.splitlines()) == 1 and message.startswith(f"{tmp_path / 'evil.pt'}: refused: ")
    assert "pickled Python object (" in message
    assert not marker.exists()  # the payload's code did not run
    with pytest.raises(UnsafeWeights):  # checkpoints go through the same loader (training resume)
        safe_load(tmp_path / "evil.pt")
    assert not marker.exists()


def test_foreign_files_are_refused_with_one_line(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a weights file at all")
    (tmp_path / "plain.pkl").write_bytes(pickle.dumps({"a": 1}))
    torch.save(build_model("hrfcn3d", 2, 0.0625).state_dict(), tmp_path / "state_dict.pt")
    for name, text in [("junk.pt", "not a PyTorch weights file"), ("plain.pkl", "not a PyTorch weights file"),
                       ("state_dict.pt", "not a cesynth weights file (it lacks state_dict, model_spec")]:
        with pytest.raises(UnsafeWeights) as refused:
            read_payload(tmp_path / name)
        assert text in str(refused.value) and len(str(refused.value).splitlines()) == 1, str(refused.value)


def test_weights_of_another_version_of_an_architecture_are_refused_with_one_line(tmp_path):
    """The plain 3D U-Net's weights saved as unet3d (as before unet3d had batch norm) say what to do."""
    spec = {"architecture": "unet3d", "inputs": ["t1", "t2"], "width": 0.0625, "output": "residual"}
    save_weights(build_model("unet3d_plain", 2, 0.0625), spec, [], tmp_path / "old.pt", target="ce_t1",
                 patch=[3, 32, 32])
    with pytest.raises(ValueError) as refused:
        load_weights(tmp_path / "old.pt")
    message = str(refused.value)
    assert len(message.splitlines()) == 1 and message.startswith(f"{tmp_path / 'old.pt'}: the weights do not fit ")
    assert "load as unet3d_plain" in message
    save_weights(build_model("unet3d_plain", 2, 0.0625), {**spec, "architecture": "unet3d_plain"}, [],
                 tmp_path / "plain.pt", target="ce_t1", patch=[3, 32, 32])
    assert load_weights(tmp_path / "plain.pt")[0].architecture == "unet3d_plain"
