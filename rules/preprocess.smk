# Input checks and per-scan preprocessing (paper section III-A), one scan's small steps grouped.


if config["input"]["source"] == "demo":

    rule demo_cohort:
        """Write the built-in phantom cohort and its sample sheet."""
        output:
            sheet=layout.path("demo_sheet"),
            images=[SAMPLES.at[s, c] for s in SAMPLES.scan for c in [*MODALITIES, REF]],
            masks=[p for p in SAMPLES.tumour_mask if p],
        params:
            demo=config["demo"],
            out_dir=lambda w, output: os.path.dirname(output.sheet),
        conda:
            "../envs/preprocess.yaml"
        log:
            log_path("demo_cohort", "demo"),
        script:
            "../workflow_scripts/demo_cohort.py"


rule dicom_check:
    """Read the headers of a scan's DICOM series folders: one 3-D series each, or one line per problem (several
    series, a localizer, non-image objects, a missing slice) before anything is converted."""
    input:
        lambda w: list(DICOM_SERIES[w.scan].values()),
    output:
        layout.path("dicom_checked"),
    params:
        scan="{scan}",
        patient=lambda w: SAMPLES.at[w.scan, "patient"],
        folders=lambda w: DICOM_SERIES[w.scan],
    conda:
        "../envs/preprocess.yaml"
    log:
        log_path("dicom_check", "{scan}"),
    script:
        "../workflow_scripts/dicom_check.py"


rule dicom_to_nifti:
    """One DICOM series to NIfTI with dcm2niix (through nipype), its BIDS JSON sidecar beside it."""
    input:
        series=lambda w: DICOM_SERIES[w.scan][w.dmod],
        checked=layout.path("dicom_checked"),
    output:
        image=layout.path("dicom_nifti"),
        sidecar=layout.path("dicom_sidecar"),
    params:
        scan="{scan}",
        patient=lambda w: SAMPLES.at[w.scan, "patient"],
    conda:
        "../envs/preprocess.yaml"
    log:
        log_path("dicom_to_nifti", "{scan}_{dmod}"),
    script:
        "../workflow_scripts/dicom_to_nifti.py"


rule validate_inputs:
    """Open every input image; stop before any work with one line per problem."""
    input:
        images=[SAMPLES.at[s, c] for s in SAMPLES.scan for c in [*MODALITIES, REF]],
        masks=[p for p in SAMPLES.tumour_mask if p],
        # the first job writes what was left out
        skipped=[layout.path("skipped_scans")] if SCREENING is not None else [],
    output:
        layout.path("validated"),
    params:
        samples=SAMPLES.to_dict("records"),
        modalities=[REF, *MOVING],
        reference=REF,
        mask_labels=MASK_LABELS,
    conda:
        "../envs/preprocess.yaml"
    log:
        log_path("validate_inputs", "all"),
    script:
        "../workflow_scripts/validate_inputs.py"


rule coregister:
    """Register every input modality of one scan onto the reference (CE-T1) with ANTs, resampled to its grid
    (transform none: check that each is on that grid already, identity transform). One job per scan: ANTs
    starts once for all its inputs."""
    input:
        moving=lambda w: [raw(w.scan, m) for m in MOVING],
        reference=lambda w: raw(w.scan, REF),
        validated=layout.path("validated"),
    output:
        images=expand(layout.path("coregistered"), mod=MOVING, allow_missing=True),
        transforms=expand(layout.path("transform"), mod=MOVING, allow_missing=True),
        qc=expand(layout.path("coreg_qc"), mod=MOVING, allow_missing=True),
    params:
        scan="{scan}",
        modalities=MOVING,
        settings=lambda w: scan_settings(config, SAMPLES.loc[w.scan], "registration"),
    threads: 1
    resources:
        scan_slots=1,  # SCAN_SLOTS, rules/common.smk
        mem_mb=4000,
        runtime=30,
    group:
        "scan"
    conda:
        "../envs/preprocess.yaml"
    log:
        log_path("coregister", "{scan}"),
    benchmark:
        benchmark_path("coregister", "{scan}")
    script:
        "../workflow_scripts/coregister.py"


rule skullstrip:
    """Brain mask of the reference: FSL BET when installed, else the pure-Python BET (backend none: the
    nonzero voxels of an already skull-stripped reference)."""
    input:
        reference=lambda w: raw(w.scan, REF),
        validated=layout.path("validated"),
    output:
        mask=layout.path("brain_mask"),
        qc=layout.path("skullstrip_qc"),
    params:
        scan="{scan}",
        settings=lambda w: scan_settings(config, SAMPLES.loc[w.scan], "skullstrip"),
    threads: 1
    resources:
        scan_slots=1,  # SCAN_SLOTS, rules/common.smk
        mem_mb=4000,
        runtime=30,
    group:
        "scan"
    conda:
        "../envs/preprocess.yaml"
    log:
        log_path("skullstrip", "{scan}"),
    benchmark:
        benchmark_path("skullstrip", "{scan}")
    script:
        "../workflow_scripts/skullstrip.py"


rule preprocess:
    """Mask, resize to the model grid, equalize to [0,1], enhancement mask M = CE-T1 - T1 > delta."""
    input:
        reference=lambda w: raw(w.scan, REF),
        coregistered=expand(layout.path("coregistered"), mod=MOVING, allow_missing=True),
        mask=layout.path("brain_mask"),
        tumour_mask=lambda w: raw(w.scan, "tumour_mask") or [],
    output:
        stack=layout.path("stack"),
        meta=layout.path("stack_json"),
    params:
        scan="{scan}",
        modalities=MODALITIES,
        moving=MOVING,
        reference=REF,
        labels={"tumour": MASK_LABELS, "enhancing": ET_LABELS},
        settings=config["preprocess"],
    resources:
        scan_slots=1,  # SCAN_SLOTS, rules/common.smk
        mem_mb=4000,
        runtime=15,
    group:
        "scan"
    conda:
        "../envs/preprocess.yaml"
    log:
        log_path("preprocess", "{scan}"),
    script:
        "../workflow_scripts/preprocess.py"


rule split:
    """Write the split, computed when the DAG is built (SPLIT, rules/common.smk: set B = scans with expert tumour
    masks; set A split by patient into train and test A), so that the study's tables and later runs read it."""
    output:
        layout.path("split"),
    params:
        split=SPLIT.to_dict("records"),
    conda:
        "../envs/preprocess.yaml"
    log:
        log_path("split", "split"),
    script:
        "../workflow_scripts/split.py"
