"""The study's summary table and the report's headline: what a reader sees first."""

import numpy as np
import pandas as pd

from cesynth.evaluate.report import headline, summary_table


def metrics_table():
    rows = []
    for model, psnr in [("identity", 20.0), ("good", 23.0), ("bad", 19.0)]:
        for i in range(6):
            rows.append({"model": model, "scan": f"s{i}", "set": "B", "psnr_brain": psnr + (i % 2 - 0.5) * 0.2,
                         "ssim_brain": 0.8, "mae_brain": 0.05, "psnr_tumour": 15.0, "ssim_tumour": 0.5,
                         "dice_enh_tumour": 0.1, "brasyn_psnr_brain": psnr - 5, "et_contrast": 0.2,
                         "et_dice": np.nan if model == "identity" else 0.4})
    return pd.DataFrame(rows)


def test_summary_marks_every_model_that_does_not_beat_identity():
    table = summary_table(metrics_table(), ["identity", "good", "bad"], baseline="identity")
    column = ("set B", "psnr_brain vs identity")
    assert table.loc["identity", column] == ""
    assert table.loc["good", column].startswith("+3.0") and "NOT" not in table.loc["good", column]
    assert table.loc["bad", column].startswith("-1.0") and table.loc["bad", column].endswith("NOT above identity")
    assert ("set B", "brasyn_psnr_brain") in table.columns and ("set B", "et_dice") in table.columns
    assert ("set B", "brasyn_ssim_tumour") not in table.columns  # no model has it: left out, not a column of nan


def test_headline_falls_back_to_set_b_when_there_is_no_test_set_a():
    metrics = metrics_table()
    ttests = pd.DataFrame([{"set": "B", "metric": "psnr_brain", "model_a": "identity", "model_b": "good",
                            "p_holm": 0.001}])
    line = headline("baselines", metrics, ttests, "identity")
    assert "best model **good**" in line and "on set B (n = 6 scans)" in line and "+3.0" in line
    assert "p = 0.001" in line
