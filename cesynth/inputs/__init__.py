"""Where scans come from (rules/preprocess.smk: validate_inputs, dicom_*; the demo_cohort and split rules): sample
sheets and the BIDS, UCSF-PDGM and BraTS layouts, DICOM series, the phantom demo cohort, input checks, and the
cohort's A/B split."""
