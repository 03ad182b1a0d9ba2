import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from cesynth.evaluate.stats import TEST_COLUMNS, holm, paired_tests, summarize


@pytest.fixture
def table():
    rng = np.random.default_rng(0)
    scans = [f"s{i}" for i in range(12)]
    rows = []
    for model, shift in (("ours", 1.0), ("unet", 0.0), ("ref", -0.5)):
        for s in scans:
            rows.append({
                "model": model, "scan": s,
                "psnr_brain": 27 + shift + rng.normal(0, 1),
                "mae_brain": 0.03 - 0.001 * shift + rng.normal(0, 0.002),
            })
    df = pd.DataFrame(rows)
    df.loc[(df.model == "unet") & (df.scan == "s3"), "psnr_brain"] = np.nan
    return df.sample(frac=1, random_state=1)  # pairing must not rely on row order


def test_holm_hand_example():
    # Sorted p: 0.01, 0.02, 0.03, 0.04 -> 4*0.01, 3*0.02, max(2*0.03, .06), 1*0.04 -> .06
    p = [0.04, 0.01, 0.03, 0.02]
    assert holm(p) == pytest.approx([0.06, 0.04, 0.06, 0.06])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    out = holm([np.nan, 0.01, 0.04])
    assert math.isnan(out[0]) and out[1:] == pytest.approx([0.02, 0.04])


def test_paired_tests_match_scipy(table):
    out = paired_tests(table, ["psnr_brain", "mae_brain"])
    assert list(out.columns) == TEST_COLUMNS
    assert len(out) == 6
    # Models in order of first appearance after the shuffle.
    models = list(pd.unique(table.model))
    row = out[(out.metric == "psnr_brain") & (out.model_a == models[0])].iloc[0]
    a = table[table.model == row.model_a].set_index("scan")["psnr_brain"]
    b = table[table.model == row.model_b].set_index("scan")["psnr_brain"]
    both = pd.concat([a, b], axis=1, join="inner").dropna()
    res = sps.ttest_rel(both.iloc[:, 0], both.iloc[:, 1])
    assert row.n == len(both)
    assert row.t == pytest.approx(res.statistic)
    assert row.p == pytest.approx(res.pvalue)
    assert row.mean_diff == pytest.approx((both.iloc[:, 0] - both.iloc[:, 1]).mean())
    assert row.sd_a == pytest.approx(both.iloc[:, 0].std(ddof=1))
    assert row.ci_low < row.mean_diff < row.ci_high
    ci = res.confidence_interval(0.95)
    assert (row.ci_low, row.ci_high) == pytest.approx((ci.low, ci.high))
    assert out.p_holm.to_numpy() == pytest.approx(holm(out.p.to_numpy()))
    assert (out.p_holm >= out.p).all()


def test_unet_nan_scan_dropped(table):
    out = paired_tests(table, ["psnr_brain", "mae_brain"])
    unet = (out.model_a == "unet") | (out.model_b == "unet")
    assert (out[unet & (out.metric == "psnr_brain")].n == 11).all()
    assert (out[~unet | (out.metric == "mae_brain")].n == 12).all()


def test_too_few_pairs_gives_nan_row():
    df = pd.DataFrame({"model": ["a", "b", "a", "b"], "scan": ["x", "x", "y", "z"], "m": [1.0, 2.0, 3.0, 4.0]})
    out = paired_tests(df, ["m"])
    row = out.iloc[0]
    assert row.n == 1 and row.mean_diff == -1.0
    assert math.isnan(row.p) and math.isnan(row.p_holm) and math.isnan(row.ci_low)


def test_duplicate_rows_rejected(table):
    with pytest.raises(ValueError):
        paired_tests(pd.concat([table, table.iloc[:1]]), ["psnr_brain"])


def test_summarize_formatting():
    df = pd.DataFrame({
        "model": ["a", "a", "b", "b"],
        "psnr_brain": [27.0, 29.0, 26.0, np.nan],
        "mae_brain": [0.03, 0.04, 0.02, 0.02],
    })
    out = summarize(df, ["psnr_brain", "mae_brain"]).set_index("model")
    assert out.loc["a", "psnr_brain_fmt"] == f"28.00 ± {np.std([27, 29], ddof=1):.2f}"
    assert out.loc["a", "mae_brain_fmt"] == "0.035 ± 0.007"
    assert out.loc["b", "n"] == 2 and out.loc["b", "psnr_brain_n"] == 1
    assert out.loc["b", "mae_brain_mean"] == pytest.approx(0.02)
    assert list(out.index) == ["a", "b"]
