"""Where every output lives: one path builder, so every rule names its files the same way, under one folder per
configuration (``results:``). The folder conventions of docs/workflow.md, as data."""

from __future__ import annotations

RESULTS = "results"  # the default; a config names its own (`results:`), set once per run by use_results


def use_results(root: str) -> None:
    """Put every output of this run under ``root`` (config ``results``): one folder per configuration, so that the
    demo and a study of one's own cohort in one clone neither mix nor overwrite each other."""
    global RESULTS
    RESULTS = root.rstrip("/")


PATHS = {
    "demo_dir": "{r}/demo",
    "demo_sheet": "{r}/demo/samples.tsv",
    "validated": "{r}/qc/inputs_validated.tsv",
    "skipped_scans": "{r}/qc/skipped_scans.tsv",
    "screening_cache": "{r}/qc/input_screening.json",
    "qc_panel": "{r}/qc/preproc/{scan}_qc.png",
    "qc_row": "{r}/qc/preproc/{scan}_qc.tsv",
    "qc_table": "{r}/qc/preproc_qc.tsv",
    "qc_html": "{r}/qc/preproc_qc.html",
    "split": "{r}/split.tsv",
    "coregistered": "{r}/preproc/{scan}/{scan}_space-ref_{mod}.nii.gz",
    "transform": "{r}/preproc/{scan}/{scan}_from-{mod}_to-ref.mat",
    "coreg_qc": "{r}/preproc/{scan}/{scan}_from-{mod}_qc.json",
    "brain_mask": "{r}/preproc/{scan}/{scan}_desc-brain_mask.nii.gz",
    "skullstrip_qc": "{r}/preproc/{scan}/{scan}_desc-brain_qc.json",
    "dicom_checked": "{r}/preproc/{scan}/dicom/{scan}_dicom_checked.json",
    "dicom_nifti": "{r}/preproc/{scan}/dicom/{scan}_{dmod}.nii.gz",
    "dicom_sidecar": "{r}/preproc/{scan}/dicom/{scan}_{dmod}.json",
    "stack": "{r}/preproc/{scan}/{scan}_desc-preproc.npy",
    "stack_json": "{r}/preproc/{scan}/{scan}_desc-preproc.json",
    "weights": "{r}/models/{model}/stage{stage}/weights.pt",
    "history": "{r}/models/{model}/stage{stage}/history.tsv",
    "checkpoints": "{r}/models/{model}/stage{stage}/checkpoints",
    "model_card": "{r}/models/{model}/stage2/model_card.json",  # beside the final weights (modelcard.card_path)
    "model_card_text": "{r}/models/{model}/stage2/model_card.md",
    "synth": "{r}/models/{model}/synth/{scan}_desc-synth_{ref}.nii.gz",
    "metrics": "{r}/models/{model}/metrics.tsv",
    "uncertainty": "{r}/models/{model}/uncertainty/{scan}_desc-uncertainty_{ref}.nii.gz",
    "uncertainty_metrics": "{r}/models/{model}/uncertainty_metrics.tsv",
    "uncertainty_calibration": "{r}/models/{model}/uncertainty_calibration.tsv",
    "study": "{r}/studies/{study}/{name}",
    "study_viewer": "{r}/studies/{study}/viewer/{scan}.html",  # offline slice viewer (cesynth.evaluate.viewer)
    "overview": "{r}/studies/overview.rst",
    # prediction for new patients (no CE-T1): everything under results/predict/<scan>/
    "predict_dicom_checked": "{r}/predict/{pscan}/dicom/{pscan}_dicom_checked.json",
    "predict_dicom_nifti": "{r}/predict/{pscan}/dicom/{pscan}_{dmod}.nii.gz",
    "predict_dicom_sidecar": "{r}/predict/{pscan}/dicom/{pscan}_{dmod}.json",
    "predict_validated": "{r}/predict/{pscan}/qc/{pscan}_inputs_validated.tsv",
    "predict_coregistered": "{r}/predict/{pscan}/preproc/{pscan}_space-T1_{pmod}.nii.gz",
    "predict_transform": "{r}/predict/{pscan}/preproc/{pscan}_from-{pmod}_to-T1.mat",
    "predict_coreg_qc": "{r}/predict/{pscan}/qc/{pscan}_from-{pmod}_qc.json",
    "predict_brain_mask": "{r}/predict/{pscan}/preproc/{pscan}_desc-brain_mask.nii.gz",
    "predict_skullstrip_qc": "{r}/predict/{pscan}/qc/{pscan}_desc-brain_qc.json",
    "predict_stack": "{r}/predict/{pscan}/preproc/{pscan}_desc-preproc.npy",
    "predict_stack_json": "{r}/predict/{pscan}/preproc/{pscan}_desc-preproc.json",
    "predict_synth": "{r}/predict/{pscan}/{pscan}_model-{model}_desc-synthetic_ce_t1.nii.gz",
    "predict_synth_model": "{r}/predict/{pscan}/{pscan}_model-{model}_space-model_desc-synthetic_ce_t1.nii.gz",
    "predict_sidecar": "{r}/predict/{pscan}/{pscan}_model-{model}_desc-synthetic_ce_t1.json",
    "predict_uncertainty": "{r}/predict/{pscan}/{pscan}_model-{model}_desc-uncertainty.nii.gz",
    "predict_uncertainty_model": "{r}/predict/{pscan}/{pscan}_model-{model}_space-model_desc-uncertainty.nii.gz",
    "predict_uncertainty_sidecar": "{r}/predict/{pscan}/{pscan}_model-{model}_desc-uncertainty.json",
    "predict_panel": "{r}/predict/{pscan}/{pscan}_model-{model}_desc-synthetic_panel.png",
    "predict_dicom": "{r}/predict/{pscan}/{pscan}_model-{model}_desc-synthetic_ce_t1_dicom",
    "predict_uncertainty_dicom": "{r}/predict/{pscan}/{pscan}_model-{model}_desc-uncertainty_dicom",
    "predict_viewer": "{r}/predict/{pscan}/viewer.html",
    "log": "{r}/logs/{rule}/{name}.log",
    "benchmark": "{r}/benchmarks/{rule}/{name}.tsv",
}


def path(kind: str, **entities) -> str:
    """The path of one kind of output; entities not given stay as Snakemake wildcards."""
    template = PATHS[kind]
    names = {"r": RESULTS, **entities}
    return template.format_map(_KeepMissing(names))


class _KeepMissing(dict):
    def __missing__(self, key):
        return "{" + key + "}"
