from cesynth.evaluate.plots import runtimes
from cesynth.evaluate.report import runtime_table
from cesynth.io import redirect_output, write_table

with redirect_output(snakemake.log[0]):
    table = runtime_table(snakemake.input.benchmarks)
    write_table(table, snakemake.output.table)
    runtimes(table, snakemake.output.figure)
