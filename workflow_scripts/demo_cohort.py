from cesynth.inputs.demo import write_cohort
from cesynth.io import redirect_output

with redirect_output(snakemake.log[0]):
    write_cohort(snakemake.params.demo, snakemake.params.out_dir, snakemake.output.sheet)
