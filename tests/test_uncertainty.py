"""Uncertainty maps (cesynth/infer/uncertainty.py): the test-time-augmentation views, the map of a real network, and
the evaluation against the real error (Spearman, AUROC, calibration deciles, missed enhancement)."""

import numpy as np
import pytest
import torch

from cesynth.infer.inference import VIEWS, InferenceSettings, Synthesizer, View, views_for
from cesynth.infer.uncertainty import SPREAD_WEIGHT, auroc, departure_and_texture, evaluate_scan, scan_map, tta_views
from cesynth.io import Stack
from cesynth.nets.models import build_model

INFERENCE = InferenceSettings.plain(stride=3)
UNCERTAINTY = {"method": "tta", "views": ["flip_x", "z1", "z2", "yx2"], "smooth": 0.0}
PAYLOAD = {"model_spec": {"inputs": ["t1", "t2"]}, "patch": [3, 32, 32]}


@pytest.mark.parametrize("name", sorted(VIEWS))
def test_every_view_is_undone_exactly(name):
    volume = np.random.default_rng(0).random((2, 7, 12, 20), dtype=np.float32)
    view = VIEWS[name]
    changed = view.apply(volume, 8)
    assert changed.shape[2] % 8 == 0 and changed.shape[3] % 8 == 0  # the net's size divisor still holds
    assert not np.array_equal(changed[:, :7, :12, :20], volume)  # the view does change what the net sees
    np.testing.assert_array_equal(view.invert(changed[0], volume.shape[1:]), volume[0])


class Voxelwise(torch.nn.Module):
    """A net whose output at a voxel depends only on the inputs there: every view predicts the same."""

    slicewise, size_divisor = False, 4

    def forward(self, x):
        return torch.sigmoid(x[:, :1] * 2 - x[:, 1:2])


class LeftBright(torch.nn.Module):
    """A net that is not mirror-symmetric: it adds the position along X, so the mirrored view disagrees, more
    the farther from the centre."""

    slicewise, size_divisor = False, 4

    def forward(self, x):
        ramp = torch.linspace(0, 0.5, x.shape[-1])
        return x[:, :1] * 0 + ramp


def test_a_voxelwise_net_has_no_uncertainty_and_a_lopsided_one_has_it_where_views_disagree():
    volume = np.random.default_rng(1).random((2, 9, 16, 16), dtype=np.float32)
    brain = np.ones(volume.shape[1:], bool)
    for net, expected_zero in ((Voxelwise(), True), (LeftBright(), False)):
        synthesizer = Synthesizer(net, PAYLOAD, INFERENCE)
        synth = np.clip(synthesizer.predict(volume), 0, 1)
        spread, members = tta_views(synth, volume, [VIEWS["flip_x"], VIEWS["z1"]], synthesizer, brain)
        assert len(members) == 3
        if expected_zero:
            assert spread.max() < 1e-6
        else:  # the mirror swaps 0 and 0.5 at the edges and leaves the centre: sd largest at the edges
            assert spread[..., 0].min() > 0.2 and spread[..., 0].max() < 0.25 and spread[..., 8].max() < 0.02


def test_views_in_the_synthesis_average_the_mirrored_prediction(stacks):
    """inference.views: the synthesis is the mean of the scan's prediction and its views' (moved back)."""
    stack = Stack(stacks[0])
    brain = np.asarray(stack["brain_mask"]) > 0
    plain = Synthesizer(LeftBright(), PAYLOAD, INFERENCE).synthesize(stack)
    mirrored = Synthesizer(LeftBright(), PAYLOAD, InferenceSettings.plain(stride=3, views=["flip_x"])).synthesize(stack)
    ramp = np.linspace(0, 0.5, brain.shape[-1], dtype=np.float32)
    np.testing.assert_allclose(plain[brain], np.broadcast_to(ramp, brain.shape)[brain], atol=1e-6)
    np.testing.assert_allclose(mirrored[brain], 0.25, atol=1e-6)  # ramp and its mirror image average to 0.25
    assert not mirrored[~brain].any()


def test_slice_wise_nets_skip_views_that_only_move_the_slice_windows():
    names = ["flip_x", "z1", "z2", "yx2", "flip_x_z1"]
    assert views_for(build_model("hrfcn3d", 2, 0.0625), names) == [VIEWS[n] for n in names]
    assert [v.name for v in views_for(build_model("unet2d", 2, 0.0625), names)] == ["flip_x", "yx2"]


def test_map_of_a_real_network_is_zero_outside_the_brain_and_smoothing_spreads_it(stacks):
    torch.manual_seed(0)
    model = build_model("hrfcn3d", 2, 0.0625, "residual").eval()
    with torch.no_grad():  # a residual net starts at the T1: give its last convolution weights to disagree with
        model.net.out.weight.normal_(0, 0.5)
    synthesizer = Synthesizer(model, PAYLOAD, INFERENCE)
    stack = Stack(stacks[0])
    brain = np.asarray(stack["brain_mask"]) > 0
    synth = synthesizer.synthesize(stack)
    raw = scan_map(synthesizer, stack, synth, UNCERTAINTY)
    smooth = scan_map(synthesizer, stack, synth, {**UNCERTAINTY, "smooth": 1.0})
    for spread in (raw, smooth):
        assert spread.shape == brain.shape and spread.dtype == np.float32
        assert not spread[~brain].any() and np.median(spread[brain]) > 1e-3
    assert smooth[brain].std() < raw[brain].std()


def test_combined_terms_are_the_departure_from_the_t1_and_the_texture_only_where_they_are():
    shape = (5, 16, 16)
    brain = np.zeros(shape, bool)
    brain[:, 2:14, 2:14] = True
    t1 = np.full(shape, 0.4, np.float32)
    assert not departure_and_texture(t1, t1, brain).any()  # a flat synthesis equal to the T1: nothing to flag
    brighter = t1 + 0.2  # flat, brighter everywhere: the departure, no texture
    np.testing.assert_allclose(departure_and_texture(brighter, t1, brain)[brain], 0.2, atol=1e-6)
    edge = t1.copy()
    edge[..., 8:] = 0.6  # an edge, the T1 unchanged on the left: texture at the edge, departure on the right
    terms = departure_and_texture(edge, t1, brain)
    assert not terms[~brain].any() and terms[2, 8, 3] < 1e-6
    assert terms[2, 8, 7] > 0.05 and terms[2, 8, 12] == pytest.approx(0.2, abs=1e-3)


def test_the_combined_map_is_the_tta_map_plus_its_model_free_terms(stacks):
    torch.manual_seed(0)
    model = build_model("hrfcn3d", 2, 0.0625, "residual").eval()
    synthesizer = Synthesizer(model, PAYLOAD, INFERENCE)
    stack = Stack(stacks[0])
    brain = np.asarray(stack["brain_mask"]) > 0
    synth = synthesizer.synthesize(stack)
    tta = scan_map(synthesizer, stack, synth, UNCERTAINTY)
    combined = scan_map(synthesizer, stack, synth, {**UNCERTAINTY, "method": "combined"})
    expected = SPREAD_WEIGHT * tta + departure_and_texture(synth, np.asarray(stack["t1"]), brain)
    np.testing.assert_allclose(combined, expected, atol=1e-6)
    assert (combined[brain] - tta[brain]).mean() > 1e-3


def test_auroc_by_hand_with_ties_and_empty_classes():
    assert auroc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.75
    assert auroc(np.array([1.0, 1.0, 2.0]), np.array([1, 0, 1])) == 0.75  # the tie counts half
    assert np.isnan(auroc(np.array([1.0, 2.0]), np.array([0, 0])))


def test_evaluation_of_a_map_that_is_the_error_a_reversed_one_and_noise():
    rng = np.random.default_rng(2)
    shape = (6, 20, 20)
    gt, t1 = rng.random(shape), rng.random(shape)
    synth = gt + rng.normal(0, 0.1, shape)
    brain = np.zeros(shape, bool)
    brain[1:5, 2:18, 2:18] = True
    error = np.abs(synth - gt)
    perfect, calibration = evaluate_scan(error, synth, gt, t1, brain)
    assert perfect["spearman"] == pytest.approx(1) and perfect["auroc"] == pytest.approx(1)
    assert perfect["error_fraction"] == pytest.approx(np.mean(error[brain] > 0.1))
    mae = [c["mae"] for c in calibration]
    assert len(mae) == 10 and all(np.diff(mae) > 0) and sum(c["voxels"] for c in calibration) == brain.sum()
    assert np.mean(mae) == pytest.approx(error[brain].mean(), rel=0.01)
    assert evaluate_scan(-error, synth, gt, t1, brain)[0]["auroc"] == pytest.approx(0)
    noise = evaluate_scan(rng.random(shape), synth, gt, t1, brain)[0]
    assert abs(noise["spearman"]) < 0.1 and abs(noise["auroc"] - 0.5) < 0.06
    assert noise["enhancing_voxels"] == 0 and np.isnan(noise["missed_flagged"])


def test_missed_enhancement_inside_the_label_is_flagged_only_by_a_map_that_is_bright_there():
    shape = (4, 20, 20)
    brain = np.ones(shape, bool)
    t1 = np.full(shape, 0.3)
    gt = t1.copy()
    label = np.zeros(shape, bool)
    label[1:3, 5:10, 5:10] = True
    gt[label] = 0.8                          # 50 voxels enhance in the real CE-T1
    synth = gt.copy()
    synth[1, 5:10, 5:10] = 0.3              # the synthesis misses 25 of them
    bright = np.where(synth != gt, 1.0, 0.0) + np.linspace(0, 0.1, gt.size).reshape(shape)
    flagged = evaluate_scan(bright, synth, gt, t1, brain, enhancing=label)[0]
    assert flagged["enhancing_voxels"] == 50 and flagged["missed_voxels"] == 25
    assert flagged["missed_flagged"] == 1.0 and flagged["missed_auroc"] == 1.0
    dark = evaluate_scan(1 - bright, synth, gt, t1, brain, enhancing=label)[0]
    assert dark["missed_flagged"] == 0.0 and dark["missed_auroc"] == 0.0


def test_config_section_refuses_unknown_keys_and_views_and_names_every_view_the_code_knows():
    import yaml

    from cesynth.pipeline import configcheck
    from conftest import REPO

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    schema = configcheck.load_schema(REPO / "config" / "schema.yaml")
    assert configcheck.schema_problems(config, schema) == []
    assert set(schema["properties"]["uncertainty"]["properties"]["views"]["items"]["enum"]) == set(VIEWS)
    config["uncertainty"]["smoth"] = 2
    assert configcheck.schema_problems(config, schema) == [
        "config: unknown key 'uncertainty.smoth' (did you mean 'smooth'?)"]
    del config["uncertainty"]["smoth"]
    config["uncertainty"]["views"] = ["flip_y"]
    [line] = configcheck.schema_problems(config, schema)
    assert line.startswith("config: uncertainty.views.0: 'flip_y' is not one of")
