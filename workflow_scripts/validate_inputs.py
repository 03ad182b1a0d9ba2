import pandas as pd

from cesynth.inputs.validate import InputError, check_files
from cesynth.io import redirect_output, write_table

with redirect_output(snakemake.log[0]):
    samples = pd.DataFrame(snakemake.params.samples)
    problems = check_files(samples, snakemake.params.modalities, snakemake.params.reference,
                           snakemake.params.mask_labels)
    if problems:
        raise InputError(problems)
    write_table(samples, snakemake.output[0])
