"""What a user sees for a mistyped config key or target: one line, no traceback, nothing written."""

import os
import subprocess
import sys

import pytest
import yaml

from cesynth.pipeline import configcheck
from conftest import REPO, SHARED
from docs_commands import fresh_clone, run_command, user_env

SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
STUDIES = ("baselines", "ablation_inputs", "ablation_local_loss")  # config.yaml


def run(workdir, *args, env=None):
    result = subprocess.run([*SNAKEMAKE, "--directory", str(workdir), *args], capture_output=True, text=True,
                            env={**os.environ, **(env or {})})
    result.out = result.stdout + result.stderr
    return result


SNAKEMAKE_NOTES = ("is extended by additional config", "Using workflow specific profile")


def own_lines(out):
    """Output lines other than Snakemake's own notes (--config extends the config file; the workflow profile)."""
    return [l for l in out.splitlines() if l.strip() and not any(note in l for note in SNAKEMAKE_NOTES)]


def defaults():
    return yaml.safe_load((REPO / "config.yaml").read_text())


def schema():
    return configcheck.load_schema(REPO / "config" / "schema.yaml")


def test_schema_refuses_unknown_keys_at_every_level_with_a_suggestion():
    config = defaults()
    config["modalites"] = ["t1"]                                   # top level
    config["training"]["stage1"]["epochz"] = 3                      # through the $ref'd stage definition
    config["models"]["hrfcn3d"]["widht"] = 0.5                      # a model entry (allOf training)
    config["input"]["bids"] = {"root": "x", "modalities": {"t1": {"suffix": "T1w"}}, "tumor_mask": None}
    assert configcheck.schema_problems(config, schema()) == [
        "config: unknown key 'input.bids.tumor_mask' (did you mean 'tumour_mask'?)",
        "config: unknown key 'modalites' (did you mean 'modalities'?)",
        "config: unknown key 'models.hrfcn3d.widht' (did you mean 'width'?)",
        "config: unknown key 'training.stage1.epochz' (did you mean 'epochs'?)",
    ]
    assert configcheck.schema_problems(defaults(), schema()) == []


def test_a_key_far_from_any_lists_the_known_ones():
    config = defaults()
    config["training"]["epochs"] = "x"  # belongs under stage1/stage2
    [line] = configcheck.schema_problems(config, schema())
    assert line.startswith("config: unknown key 'training.epochs' (known keys here: amp, augment, batch_size,")
    assert "stage1, stage2" in line


@pytest.mark.parametrize("override, line", [
    (["demo={patiens: 3}"], "config: unknown key 'demo.patiens' (did you mean 'patients'?)"),
    (["training={stage1: {epochz: 3}}"], "config: unknown key 'training.stage1.epochz' (did you mean 'epochs'?)"),
    (["models={unet2d: {architecture: unet2d, inputs: [t1, t2, adc], lamdbas: 1}}"],
     "config: unknown key 'models.unet2d.lamdbas' (known keys here: amp, architecture,"),
    (["preprocess={shape: 48}"], "config: preprocess.shape: '48' is not of type 'array'"),
    (["qc={volume_tolerence: 0.3}"], "config: unknown key 'qc.volume_tolerence' (did you mean 'volume_tolerance'?)"),
])
def test_config_error_is_one_line_before_any_job(tmp_path, override, line):
    result = run(tmp_path, "--cores", "1", "--config", *override)
    assert result.returncode != 0
    assert "Traceback" not in result.out and "Exception" not in result.out, result.out
    [printed] = own_lines(result.out)
    assert printed.startswith(line), printed
    assert not (tmp_path / "results").exists()  # nothing ran, nothing written


def test_three_mistakes_are_three_lines_in_one_style_before_any_job(tmp_path):
    """A mistyped key (the schema's), a study of a model that does not exist (a cross-field check) and a predict
    model that is not one (the predict section's): one check, every problem at once."""
    result = run(tmp_path, "--cores", "1", "--config", "demo={patiens: 3}", "studies={baselines: [unet5d]}",
                 "predict={samplesheet: new.tsv, model: hrfcn4d}")
    assert result.returncode != 0 and "Traceback" not in result.out, result.out
    assert own_lines(result.out) == ["config: unknown key 'demo.patiens' (did you mean 'patients'?)",
                                     "config: study baselines: unknown model(s) ['unet5d']",
                                     "config: predict.model 'hrfcn4d' is not a model (did you mean 'hrfcn3d'?)"]
    assert not (tmp_path / "results").exists()


def test_site_configfile_from_the_environment_is_checked_too(tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text("split: {seeed: 1}\n")
    result = run(tmp_path, "-n", env={configcheck.CONFIGFILE_ENV: str(site)})
    assert own_lines(result.out) == ["config: unknown key 'split.seeed' (did you mean 'seed'?)"], result.out
    missing = run(tmp_path, "-n", env={configcheck.CONFIGFILE_ENV: str(tmp_path / "nope.yaml")})
    assert missing.returncode != 0 and len(own_lines(missing.out)) == 1, missing.out
    assert own_lines(missing.out)[0].startswith(f"{configcheck.CONFIGFILE_ENV}={tmp_path / 'nope.yaml'}: ")


def test_site_configfile_is_merged_after_configfiles_and_before_config(tmp_path):
    """CESYNTH_CONFIGFILE wins over --configfile, --config wins over it (dry run: the planned jobs)."""
    site = tmp_path / "site.yaml"
    site.write_text("studies: {baselines: [unet2d, unet3d], ablation_inputs: [unet2d], ablation_local_loss: [unet2d]}\n")
    result = run(tmp_path, "baselines", "-n", "--configfile", str(REPO / "config" / "paper.yaml"),
                 "--config", "input={source: demo}", env={configcheck.CONFIGFILE_ENV: str(site)})
    assert result.returncode == 0, result.out[-3000:]
    trained = {m for m in defaults()["models"] if f"results/models/{m}/stage1/weights.pt" in result.out}
    assert trained == {"unet2d", "unet3d"}  # the site file, not config.yaml's four baselines
    result = run(tmp_path, "baselines", "-n", "--configfile", str(REPO / "config" / "paper.yaml"),
                 "--config", "studies={baselines: [hrfcn2d]}", "input={source: demo}",
                 env={configcheck.CONFIGFILE_ENV: str(site)})
    trained = {m for m in defaults()["models"] if f"results/models/{m}/stage1/weights.pt" in result.out}
    assert result.returncode == 0 and trained == {"hrfcn2d"}, result.out[-3000:]


@pytest.mark.parametrize("target, hint", [
    ("hrfcn4d", "unknown target 'hrfcn4d' (did you mean 'hrfcn3d'?)"),
    ("baseline", "unknown target 'baseline' (did you mean 'baselines'?)"),
    ("hrfcn3d", "'hrfcn3d' is a model, not a target: build a study that compares it (baselines,"),
])
def test_unknown_target_lists_studies_and_models(tmp_path, target, hint):
    result = run(tmp_path, target, "-n")
    assert result.returncode != 0 and "Traceback" not in result.out, result.out
    [printed] = own_lines(result.out)
    assert printed.startswith(hint), printed
    for study in STUDIES:
        assert f"{study} (" in printed
    models = printed.split("models: ", 1)[1].split(".", 1)[0].split(", ")
    assert models == list(defaults()["models"])
    assert "other targets: all, preprocess_all, predict, viewers, targets" in printed


@pytest.mark.parametrize("command", ["snakemake targets", "snakemake targets -n"])
def test_targets_prints_them_as_the_readme_says(tmp_path, command):
    """Exactly as README.md prints it, no --cores, in the root of a fresh clone (as a job the rule would need
    --cores, and print nothing with -n)."""
    clone = fresh_clone(tmp_path / "clone")
    result = run_command(command, clone, user_env(clone), timeout=300)
    assert result.returncode == 0, result.out[-3000:]
    assert "studies: baselines (unet2d, unet3d, hrfcn2d, hrfcn3d); ablation_inputs" in result.stdout, result.out
    assert "other targets: all, preprocess_all, predict, viewers, targets" in result.stdout
    assert not (clone / "results").exists()


@pytest.mark.skipif(not (SHARED / "data").is_dir(), reason="../shared/data not available")
def test_targets_under_cross_validation_offer_only_what_it_runs():
    """config/real.yaml: the default studies would score models on their own training patients, so they are not
    built there, nor offered; the learning curve is a target of its own."""
    result = run(REPO, "targets", "--configfile", str(REPO / "config" / "real.yaml"))
    assert result.returncode == 0, result.out[-3000:]
    assert "studies: oof (hrfcn3d_oof, unet2d_oof). models:" in result.stdout, result.out
    assert "other targets: all, preprocess_all, predict, viewers, targets, crossval, ship, learning_curve" in result.stdout


def test_predict_misconfiguration_is_one_line(tmp_path):
    result = run(tmp_path, "predict", "-n")
    assert result.returncode != 0
    assert own_lines(result.out) == [own_lines(result.out)[0]] and "set predict.samplesheet" in result.out
    assert "Traceback" not in result.out and "Exception" not in result.out, result.out
    typo = run(tmp_path, "predict", "-n", "--config", "predict={samplesheet: new.tsv, model: hrfcn3}")
    assert own_lines(typo.out) == ["config: predict.model 'hrfcn3' is not a model (did you mean 'hrfcn3d'?)"]
