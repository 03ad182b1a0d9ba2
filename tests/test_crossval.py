"""Cross-validation by patient (cesynth.pipeline.crossval) and the pre-registered endpoints
(cesynth.evaluate.stats.endpoint_tests)."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from cesynth.evaluate.stats import endpoint_tests, holm
from cesynth.inputs.validate import InputError
from cesynth.pipeline import crossval
from conftest import REPO

FOLDS_TSV = REPO / "config" / "real" / "folds.tsv"


def test_the_committed_folds_are_balanced_folds_of_their_own_columns():
    """config/real/folds.tsv is what balanced_folds makes of its site and ET columns (docs/real.md says how)."""
    table = pd.read_csv(FOLDS_TSV, sep="\t")
    assert (crossval.balanced_folds(table, 5) == table.fold).all()
    assert table.groupby("fold").size().tolist() == [5] * 5
    enhancing = table[table.et_ml >= 5].groupby("fold").size()
    assert enhancing.min() >= 3
    et = table.groupby("fold").et_ml.sum()
    assert et.max() - et.min() < 0.1 * et.mean()


def test_balanced_folds_spread_sites_and_tumour_volume():
    patients = pd.DataFrame({"patient": [f"p{i}" for i in range(12)], "site": ["a"] * 6 + ["b"] * 6,
                             "et_ml": [40, 30, 20, 10, 5, 1, 35, 25, 15, 8, 2, np.nan]})
    folds = crossval.balanced_folds(patients, 3)
    assert folds.groupby([patients.site, folds]).size().tolist() == [2] * 6  # each site twice per fold
    assert folds[patients.et_ml.idxmax()] != folds[patients.et_ml.drop(0).idxmax()]  # the two largest apart


def samples(n=6):
    return pd.DataFrame({"scan": [f"s{i}" for i in range(n)], "patient": [f"p{i // 2}" for i in range(n)],
                         "tumour_mask": ["m"] * (n - 1) + [""]})


def test_load_folds_names_each_problem(tmp_path):
    path = tmp_path / "folds.tsv"
    pd.DataFrame({"scan": ["s0", "s1", "s2", "s3", "s4", "s9"], "fold": [1, 2, 1, 1, 2, 2]}).to_csv(
        path, sep="\t", index=False)
    with pytest.raises(InputError) as error:
        crossval.load_folds(path, samples())
    text = str(error.value)
    assert "s9" in text and "not in the sample sheet" in text
    assert "s5" in text and "has no fold" in text
    assert "patient p0 has scans in folds [1, 2]" in text


def test_fold_models_never_see_their_fold_and_subsets_are_nested():
    folds = pd.DataFrame({"scan": [f"s{i}" for i in range(12)], "patient": [f"p{i}" for i in range(12)],
                          "fold": [1, 2, 3] * 4})
    cv = crossval.design(folds, ["hrfcn3d", "unet2d"], {"model": "hrfcn3d", "folds": [1], "n_train": [2, 4]}, 0)
    assert cv.pooled == {"hrfcn3d_oof": ["hrfcn3d_fold1", "hrfcn3d_fold2", "hrfcn3d_fold3"],
                         "unet2d_oof": ["unet2d_fold1", "unet2d_fold2", "unet2d_fold3"]}
    for model in cv.models.values():
        assert not set(model.train) & set(model.test) and set(model.test) == set(cv.folds[model.fold])
    n2, n4, full = (set(cv.models[m].train) for m in ("hrfcn3d_fold1_n2", "hrfcn3d_fold1_n4", "hrfcn3d_fold1"))
    assert len(n2) == 2 and len(n4) == 4 and n2 < n4 < full
    again = crossval.design(folds, ["hrfcn3d"], {"model": "hrfcn3d", "folds": [1], "n_train": [2]}, 0)
    other_seed = crossval.design(folds, ["hrfcn3d"], {"model": "hrfcn3d", "folds": [1], "n_train": [2]}, 1)
    assert again.models["hrfcn3d_fold1_n2"] == cv.models["hrfcn3d_fold1_n2"]
    assert other_seed.models["hrfcn3d_fold1_n2"] != cv.models["hrfcn3d_fold1_n2"]


def test_learning_curve_table_and_trend():
    folds = pd.DataFrame({"scan": ["a", "b", "c", "d"], "patient": ["a", "b", "c", "d"], "fold": [1, 1, 2, 2]})
    cv = crossval.design(folds, ["hrfcn3d"], {"model": "hrfcn3d", "folds": [1], "n_train": [1]}, 0)
    identity = pd.DataFrame({"scan": list("abcd"), "psnr_brain": [20.0, 22.0, 21.0, 23.0]})
    metrics = pd.DataFrame({
        "model": ["hrfcn3d_fold1"] * 2 + ["hrfcn3d_fold2"] * 2 + ["hrfcn3d_fold1_n1"] * 2,
        "scan": ["a", "b", "c", "d", "a", "b"], "psnr_brain": [21.0, 24.0, 21.5, 23.5, 19.0, 22.0],
        "et_ml": [10.0, 1.0, 6.0, 7.0, 10.0, 1.0], "et_contrast": [0.3, 0.9, 0.2, 0.4, 0.1, 0.9],
        "et_contrast_truth": [0.6, 0.5, 0.5, 0.5, 0.6, 0.5]})
    table = crossval.learning_curve(metrics, identity, cv.models).set_index("model")
    assert table.psnr_gain.to_dict() == {"hrfcn3d_fold1_n1": -0.5, "hrfcn3d_fold1": 1.5, "hrfcn3d_fold2": 0.5}
    assert table.et_scans.to_dict() == {"hrfcn3d_fold1_n1": 1, "hrfcn3d_fold1": 1, "hrfcn3d_fold2": 2}
    assert np.isclose(table.et_contrast_share["hrfcn3d_fold2"], 0.3 / 0.5)
    assert table.n_train.to_dict() == {"hrfcn3d_fold1_n1": 1, "hrfcn3d_fold1": 2, "hrfcn3d_fold2": 2}

    exact = pd.DataFrame({"n_train": [5, 10, 20, 40], "gain": 0.5 + 0.25 * np.log([5, 10, 20, 40])})
    trend = crossval.fit_trend(exact, "gain")
    assert np.isclose(trend["slope_per_log_n"], 0.25) and np.isclose(trend["intercept"], 0.5)
    assert np.isclose(trend["projected_n369"], 0.5 + 0.25 * np.log(369))


def test_endpoints_put_the_primary_alone_and_correct_within_families():
    rng = np.random.default_rng(0)
    scans = [f"s{i}" for i in range(10)]
    base = rng.normal(20, 2, 10)
    rows = []
    for model, shift in (("identity", 0.0), ("hrfcn3d_oof", 1.0), ("unet2d_oof", 0.3)):
        values = base + shift + rng.normal(0, 0.5, 10)
        rows += [{"model": model, "scan": s, "psnr_brain": v, "ssim_brain": v / 30, "et_dice": v / 40}
                 for s, v in zip(scans, values)]
    metrics = pd.DataFrame(rows)
    table = endpoint_tests(metrics, "hrfcn3d_oof", "identity")
    primary = table[table.family == "primary"]
    assert primary.metric.tolist() == ["psnr_brain"] and primary.p.iloc[0] == primary.p_holm.iloc[0]
    wide = metrics.pivot(index="scan", columns="model", values="psnr_brain")
    assert np.isclose(primary.p.iloc[0], sps.ttest_rel(wide.hrfcn3d_oof, wide.identity).pvalue)
    secondary = table[table.family == "secondary: hrfcn3d_oof"]
    assert secondary.metric.tolist() == ["ssim_brain", "et_dice"]
    assert np.allclose(secondary.p_holm, holm(secondary.p.to_numpy()))
    assert table[table.family == "secondary: other models"].model_a.unique().tolist() == ["unet2d_oof"]


def test_crossval_null_switches_it_off_with_config_errors_not_tracebacks(tmp_path):
    """`crossval: null` over config/real.yaml: the study `oof` then names models that no longer exist, which must
    be said in one line (it was an AttributeError while the schema filled defaults into None)."""
    off = tmp_path / "off.yaml"
    off.write_text("crossval: null\n")
    result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n", "--directory",
                             str(tmp_path), "--configfile", str(REPO / "config" / "real.yaml"), str(off)],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode != 0 and "Traceback" not in result.stderr and "Error in file" not in result.stderr
    assert "config: study oof: unknown model(s) ['hrfcn3d_oof', 'unet2d_oof']" in result.stderr, result.stderr[-2000:]
