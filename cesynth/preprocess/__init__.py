"""From a scan's files to its model-space stack (rules/preprocess.smk, rules/qc.smk): ANTs co-registration, skull
stripping, resizing and equalization, the intensity contract of model space, and the QC panels."""
