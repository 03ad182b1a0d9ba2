# Prediction for new patients without CE-T1 (snakemake predict): the same preprocessing as training,
# but registered to and skull-stripped on the patient's own T1, and written back onto its native grid.

from cesynth.infer import predict

PREDICT = config.get("predict") or {}

if PREDICT.get("samplesheet"):
    PREDICT_MODEL = PREDICT["model"]  # a model, and given weights have their card: checked with the config
    PREDICT_SPEC = plans.model_spec(config, PREDICT_MODEL)
    PREDICT_MOVING = [m for m in PREDICT_SPEC["inputs"] if m != predict.GRID_SEQUENCE]
    # Every scan's images are opened here, once, in the process that builds the DAG: all problems at once, before
    # any job (per-scan predict_validate jobs would stop at the first broken scan).
    PREDICT_SAMPLES = predict.load_samples(PREDICT["samplesheet"], PREDICT_SPEC["inputs"], workflow.is_main_process)
    # Inputs given as DICOM series folders ({scan: {column: folder}}) are read as their converted NIfTI.
    PREDICT_DICOM_INPUTS = dicom.series_folders(PREDICT_SAMPLES, PREDICT_SPEC["inputs"])
    PREDICT_SAMPLES = dicom.with_converted_paths(PREDICT_SAMPLES, PREDICT_DICOM_INPUTS,
        lambda s, c: layout.path("predict_dicom_nifti", pscan=s, dmod=c)).set_index("scan", drop=False)
    # Explicit weights (e.g. copied from a training site, with their model card) or the ones this workflow trains.
    PREDICT_WEIGHTS = PREDICT.get("weights") or layout.path("weights", model=PREDICT_MODEL, stage=2)
    # DICOM output: when the T1 came as DICOM (auto), for every scan (always) or never.
    PREDICT_DICOM_OUTPUTS = [s for s in PREDICT_SAMPLES.scan if predict.wants_dicom(
        PREDICT["dicom_output"], predict.GRID_SEQUENCE in PREDICT_DICOM_INPUTS.get(s, {}))]
    # The uncertainty map beside each synthesis (predict.uncertainty), as NIfTI and, with the synthesis, DICOM.
    PREDICT_MAP = bool(PREDICT["uncertainty"])
    PREDICT_UNCERTAINTY = ["uncertainty", "uncertainty_model", "uncertainty_sidecar"] if PREDICT_MAP else []
    PREDICT_DICOM_KINDS = ["dicom", "uncertainty_dicom"] if PREDICT_MAP else ["dicom"]

    wildcard_constraints:
        pscan="|".join(map(re.escape, PREDICT_SAMPLES.scan)),

    rule predict:
        """Synthetic CE-T1 of every scan of predict.samplesheet, on its native T1 grid and in model space."""
        input:
            [predict_out(k, s) for s in PREDICT_SAMPLES.scan
             for k in ["synth", "synth_model", "sidecar", "panel", "viewer", *PREDICT_UNCERTAINTY]],
            [predict_out(k, s) for s in PREDICT_DICOM_OUTPUTS for k in PREDICT_DICOM_KINDS],

    use rule dicom_check as predict_dicom_check with:
        input:
            lambda w: list(PREDICT_DICOM_INPUTS[w.pscan].values()),
        output:
            layout.path("predict_dicom_checked"),
        params:
            scan="{pscan}",
            patient=lambda w: PREDICT_SAMPLES.at[w.pscan, "patient"],
            folders=lambda w: PREDICT_DICOM_INPUTS[w.pscan],
        group:
            "predict"
        log:
            log_path("predict_dicom_check", "{pscan}"),

    use rule dicom_to_nifti as predict_dicom_to_nifti with:
        input:
            series=lambda w: PREDICT_DICOM_INPUTS[w.pscan][w.dmod],
            checked=layout.path("predict_dicom_checked"),
        output:
            image=layout.path("predict_dicom_nifti"),
            sidecar=layout.path("predict_dicom_sidecar"),
        params:
            scan="{pscan}",
            patient=lambda w: PREDICT_SAMPLES.at[w.pscan, "patient"],
        group:
            "predict"
        log:
            log_path("predict_dicom_to_nifti", "{pscan}_{dmod}"),

    # The training cohort's rules (rules/preprocess.smk) on a new patient's files: same scripts,
    # settings and resources, the patient's T1 as reference, outputs in the predict_* paths.
    use rule validate_inputs as predict_validate with:
        input:
            images=lambda w: [PREDICT_SAMPLES.at[w.pscan, m] for m in PREDICT_SPEC["inputs"]],
        output:
            layout.path("predict_validated"),
        params:
            samples=lambda w: [PREDICT_SAMPLES.loc[w.pscan].to_dict()],
            modalities=PREDICT_SPEC["inputs"],
            reference=predict.GRID_SEQUENCE,
            mask_labels=None,  # new patients come without tumour masks
        resources:
            scan_slots=1,  # SCAN_SLOTS, rules/common.smk
        group:
            "predict"
        log:
            log_path("predict_validate", "{pscan}"),

    if PREDICT_MOVING:  # a T1-only model registers nothing

        use rule coregister as predict_coregister with:
            input:
                moving=lambda w: [PREDICT_SAMPLES.at[w.pscan, m] for m in PREDICT_MOVING],
                reference=lambda w: PREDICT_SAMPLES.at[w.pscan, predict.GRID_SEQUENCE],
                validated=layout.path("predict_validated"),
            output:
                images=expand(layout.path("predict_coregistered"), pmod=PREDICT_MOVING, allow_missing=True),
                transforms=expand(layout.path("predict_transform"), pmod=PREDICT_MOVING, allow_missing=True),
                qc=expand(layout.path("predict_coreg_qc"), pmod=PREDICT_MOVING, allow_missing=True),
            params:
                scan="{pscan}",
                modalities=PREDICT_MOVING,
                settings=lambda w: scan_settings(config, PREDICT_SAMPLES.loc[w.pscan], "registration"),
            group:
                "predict"
            log:
                log_path("predict_coregister", "{pscan}"),
            benchmark:
                benchmark_path("predict_coregister", "{pscan}")

    use rule skullstrip as predict_skullstrip with:
        input:
            reference=lambda w: PREDICT_SAMPLES.at[w.pscan, predict.GRID_SEQUENCE],
            validated=layout.path("predict_validated"),
        output:
            mask=layout.path("predict_brain_mask"),
            qc=layout.path("predict_skullstrip_qc"),
        params:
            scan="{pscan}",
            settings=lambda w: scan_settings(config, PREDICT_SAMPLES.loc[w.pscan], "skullstrip"),
        group:
            "predict"
        log:
            log_path("predict_skullstrip", "{pscan}"),
        benchmark:
            benchmark_path("predict_skullstrip", "{pscan}")

    use rule preprocess as predict_preprocess with:
        input:
            reference=lambda w: PREDICT_SAMPLES.at[w.pscan, predict.GRID_SEQUENCE],
            coregistered=expand(layout.path("predict_coregistered"), pmod=PREDICT_MOVING, allow_missing=True),
            mask=layout.path("predict_brain_mask"),
        output:
            stack=layout.path("predict_stack"),
            meta=layout.path("predict_stack_json"),
        params:
            scan="{pscan}",
            modalities=PREDICT_SPEC["inputs"],
            moving=PREDICT_MOVING,
            reference=predict.GRID_SEQUENCE,  # T1: no CE-T1, so no enhancement mask
            labels=None,
        group:
            "predict"
        log:
            log_path("predict_preprocess", "{pscan}"),

    rule predict_synthesize:
        """Run the trained model; write the synthetic CE-T1 (native T1 grid and model space), sidecar, panel."""
        input:
            weights=PREDICT_WEIGHTS,
            card=modelcard.card_path(PREDICT_WEIGHTS),
            stack=layout.path("predict_stack"),
            meta=layout.path("predict_stack_json"),
            t1=lambda w: PREDICT_SAMPLES.at[w.pscan, predict.GRID_SEQUENCE],
        output:
            synth=predict_out("synth"),
            synth_model=predict_out("synth_model"),
            sidecar=predict_out("sidecar"),
            panel=predict_out("panel"),
            **{k: predict_out(k) for k in PREDICT_UNCERTAINTY},
        params:
            model=PREDICT_MODEL,
            spec=PREDICT_SPEC,
            inputs=lambda w: {m: PREDICT_SAMPLES.at[w.pscan, m] for m in PREDICT_SPEC["inputs"]},
            settings=lambda w: {
                "model": config["models"][PREDICT_MODEL],
                **{k: config[k] for k in ("preprocess", "inference", "uncertainty")},
                **{k: scan_settings(config, PREDICT_SAMPLES.loc[w.pscan], k) for k in ("registration", "skullstrip")},
            },
            preprocessing=plans.preprocessing_record(config),
            inference=plans.inference_settings(config, PREDICT_MODEL),
        threads: plans.model_settings(config, PREDICT_MODEL)["threads"]
        resources:
            mem_mb=8000,
            runtime=30,
            gpu=1,
        conda:
            "../envs/train.yaml"
        log:
            log_path("predict_synthesize", "{pscan}"),
        benchmark:
            benchmark_path("predict_synthesize", "{pscan}")
        script:
            "../workflow_scripts/predict_synthesize.py"

    rule predict_dicom:
        """The synthetic CE-T1 on the native T1 grid as a DICOM series: new series in the T1's study and frame of
        reference (a new study when the T1 came as NIfTI), DERIVED\\SECONDARY, described as SYNTHETIC."""
        input:
            synth=predict_out("synth"),
            sidecar=predict_out("sidecar"),
            t1_series=lambda w: PREDICT_DICOM_INPUTS.get(w.pscan, {}).get(predict.GRID_SEQUENCE, []),
            **({"uncertainty": predict_out("uncertainty")} if PREDICT_MAP else {}),
        output:
            **{k: directory(predict_out(k)) for k in PREDICT_DICOM_KINDS},
        params:
            patient=lambda w: PREDICT_SAMPLES.at[w.pscan, "patient"],
            model=PREDICT_MODEL,
        group:
            "predict"
        conda:
            "../envs/train.yaml"
        log:
            log_path("predict_dicom", "{pscan}"),
        script:
            "../workflow_scripts/predict_dicom.py"

else:
    if "predict" in REQUESTED:
        sys.exit(predict.NOT_CONFIGURED)

    rule predict:
        """Not configured: fails with what to set (predict.samplesheet, predict.model)."""
        input:
            predict.not_configured,
