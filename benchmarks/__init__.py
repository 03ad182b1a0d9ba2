"""Benchmarks of the pipeline, outside the installed package: ``python -m benchmarks [--quick]`` (see
:mod:`benchmarks.run`); ``python benchmarks/preprocessing.py`` for the preprocessing steps alone."""
