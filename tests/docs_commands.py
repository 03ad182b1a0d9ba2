"""The shell commands the documentation prints, and a fresh copy of the repository to run them in.

Shared by tests/test_docs_commands.py (every command but the cluster one) and tests/test_slurm.py
(the SLURM command). Commands are taken from the fenced ```bash blocks of README.md and docs/*.md,
one command per line, exactly as printed; a trailing `# comment` is the shell's, not removed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO

DOCS = ("README.md", *sorted(p.relative_to(REPO).as_posix() for p in (REPO / "docs").glob("*.md")))
SLURM_PROFILE = "--profile profiles/slurm"
# The test-size study for documented commands (CESYNTH_CONFIGFILE, merged after their --configfile):
# the smallest sizes of every rule, and the cheapest registration and skull strip.
TINY = "config/tiny.yaml:config/tiny_fast.yaml"
# ...with three single-scan patients (one each in train, test A and B): fewer scans to preprocess
SMALL_COHORT = "demo: {patients: 3, followups: 0, expert_masks: 1}\n"


def tiny_configfile(clone: Path) -> str:
    """CESYNTH_CONFIGFILE for the documented commands: the tiny study on the small cohort."""
    (clone / "small_cohort.yaml").write_text(SMALL_COHORT)
    return f"{TINY}:small_cohort.yaml"


def documented_commands() -> list[tuple[str, str]]:
    """(file, command) for every line of every ```bash block, in the order printed."""
    found = []
    for name in DOCS:
        text = (REPO / name).read_text()
        for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
            found += [(name, line) for line in block.splitlines() if line.strip()]
    return found


def printed_file(doc: str, name: str) -> str:
    """The file ``name`` as ``doc`` prints it: the fenced block (not commands) right after the first paragraph
    that names it in backticks and ends with a colon, else the inline code after its name and a colon or `=`
    (e.g. "`a.yaml` = `predict: {...}`"). A block without a language is a table shown aligned: its runs of two or
    more spaces are the file's tabs."""
    text = (REPO / doc).read_text()
    found = re.search(rf"`{re.escape(name)}`(?:[^\n]|\n(?!\n))*?:\n\n```(?!bash)(\w*)\n(.*?)^```", text,
                      flags=re.S | re.M)
    if found:
        language, content = found.groups()
        return content if language else re.sub(r" {2,}", "\t", content)
    inline = re.search(rf"`{re.escape(name)}`[^`]*?[:=]\s+`([^`]+)`", text)
    if not inline:
        raise ValueError(f"{doc} prints no block for `{name}`")
    return inline.group(1) + "\n"


def fresh_clone(dest: Path) -> Path:
    """The repository's files as a fresh clone has them: tracked and new (not ignored) files of
    this working tree, without results/, .snakemake/ or a .venv."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                           capture_output=True, text=True).stdout.split("\0")
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def user_env(clone: Path, **extra) -> dict:
    """A shell as after `pip install -r requirements.txt -e .`: this venv's snakemake on PATH and the
    clone's package importable (for the jobs too, which inherit the environment)."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env["PATH"]])
    env["PYTHONPATH"] = str(clone)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def run_command(command: str, cwd: Path, env: dict, timeout: float) -> subprocess.CompletedProcess:
    """One documented command, as printed, through bash in ``cwd``."""
    start = time.monotonic()
    result = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout)
    result.seconds = time.monotonic() - start
    result.out = result.stdout + result.stderr
    return result
