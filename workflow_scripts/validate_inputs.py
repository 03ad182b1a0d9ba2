import pandas as pd

from cesynth.io import redirect_output, write_table
from cesynth.validate import InputError, check_files

with redirect_output(snakemake.log[0]):
    samples = pd.DataFrame(snakemake.params.samples)
    problems = check_files(samples, snakemake.params.modalities, snakemake.params.reference,
                           snakemake.params.mask_labels)
    if problems:
        raise InputError(problems)
    write_table(samples, snakemake.output[0])
