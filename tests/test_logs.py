"""A retried job's first failure stays readable: Snakemake deletes the rule log before each attempt."""

import pytest

from cesynth.io import redirect_output


def test_failed_attempt_log_is_kept_next_to_the_rule_log(tmp_path, monkeypatch):
    log = tmp_path / "coregister" / "S1_t2.log"
    log.parent.mkdir()
    monkeypatch.setenv("SLURM_JOB_ID", "41")
    with pytest.raises(RuntimeError):
        with redirect_output(log):
            print("registering S1 t2")
            raise RuntimeError("ANTs: out of memory")
    log.unlink()  # what Snakemake does before the retry
    with redirect_output(log):
        print("attempt 2 fine")
    assert log.read_text() == "attempt 2 fine\n"
    failed = (tmp_path / "coregister" / "S1_t2.log.failed").read_text()
    assert failed.startswith("==== failed attempt: ") and "SLURM job 41\n" in failed
    assert "registering S1 t2" in failed and "RuntimeError: ANTs: out of memory" in failed
    assert "attempt 2" not in failed
