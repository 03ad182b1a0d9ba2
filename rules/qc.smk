# Per-scan and cohort QC of preprocessing: mask/registration panels and a flagged cohort table.


rule qc_scan:
    """Panel of the brain mask and every registered input over the reference, and its QC numbers."""
    input:
        reference=lambda w: raw(w.scan, REF),
        mask=layout.path("brain_mask"),
        mask_qc=layout.path("skullstrip_qc"),
        registered=expand(layout.path("coregistered"), mod=MOVING, allow_missing=True),
        coreg_qc=expand(layout.path("coreg_qc"), mod=MOVING, allow_missing=True),
    output:
        panel=report(
            layout.path("qc_panel"),
            caption="../report/qc_panel.rst",
            category="QC",
            subcategory="per-scan panels",
            labels={"scan": "{scan}"},
        ),
        row=layout.path("qc_row"),
    params:
        moving=MOVING,
    resources:
        scan_slots=1,  # SCAN_SLOTS, rules/common.smk
    group:
        "scan"
    conda:
        "../envs/preprocess.yaml"
    log:
        log_path("qc_scan", "{scan}"),
    script:
        "../workflow_scripts/qc_scan.py"


rule qc_cohort:
    """Cohort QC table; flags brain volumes > qc.volume_tolerance off the median and registrations that lowered MI."""
    input:
        rows=expand(layout.path("qc_row"), scan=SAMPLES.scan),
    output:
        tsv=layout.path("qc_table"),
        html=report(layout.path("qc_html"), caption="../report/qc.rst", category="QC", subcategory="cohort table",
                    labels={"figure": "cohort QC table"}),
    params:
        volume_tolerance=config["qc"]["volume_tolerance"],
    conda:
        "../envs/preprocess.yaml"
    log:
        log_path("qc_cohort", "all"),
    script:
        "../workflow_scripts/qc_cohort.py"


rule preprocess_all:
    """Every scan preprocessed and quality-checked, nothing trained: look at a new cohort first."""
    input:
        stacks(SAMPLES.scan),
        rules.qc_cohort.output,


if SCREENING is not None:

    rule skipped_scans:
        """The scans input.skip_invalid left out (one line per problem) and the checks the next parse reuses."""
        output:
            report=layout.path("skipped_scans"),
            cache=layout.path("screening_cache"),
        params:
            problems=[vars(p) for p in SCREENING.problems],
            checks=SCREENING.checks,
        conda:
            "../envs/preprocess.yaml"
        log:
            log_path("skipped_scans", "all"),
        script:
            "../workflow_scripts/skipped_scans.py"
