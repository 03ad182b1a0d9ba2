"""Each rule's conda environment (`--sdm conda`) holds every third-party package its script imports, and the
package declares (pyproject.toml) what requirements.txt pins.

A rule's imports are its script's and, transitively, those of the cesynth modules it imports, at any depth of
the file (an import inside a function runs when that function does), except ``if TYPE_CHECKING:`` blocks.
Rules are read from the text of rules/*.smk, so rules defined only under some configuration count too.
"""

import ast
import re
import sys
import tomllib
from pathlib import Path

import yaml

from conftest import REPO

# Import name -> package name in the env files, where they differ (a submodule that needs another package too).
PACKAGE_OF_IMPORT = {"yaml": "pyyaml", "sklearn": "scikit-learn", "skimage": "scikit-image", "ants": "antspyx",
                     "fsl": "fslpy", "PIL": "pillow", "torch.utils.tensorboard": "tensorboard"}
# conda-forge names of packages that PyPI names otherwise.
PYPI_NAME_OF_CONDA = {"pytorch": "torch"}
# Provided to every script by Snakemake itself (its module is put on the script's path), not by the env.
PROVIDED = {"snakemake"}
RULE_START = re.compile(r"^\s*(?:rule\b|use rule\b|checkpoint\b)", re.M)
DIRECTIVE = r"^\s*{}:\s*\n\s*(.+?)\s*$"


def rules_with_env(smk_text: str) -> list[tuple[str, str, str]]:
    """(rule, conda env path, script path) of every rule of a .smk file with both, paths as written (relative to
    rules/); a rule made in a loop is named by its ``name:`` expression."""
    found = []
    starts = [m.start() for m in RULE_START.finditer(smk_text)]
    for start, end in zip(starts, [*starts[1:], len(smk_text)]):  # no rule: nothing
        block = smk_text[start:end]
        conda = re.search(DIRECTIVE.format("conda"), block, re.M)
        script = re.search(DIRECTIVE.format("script"), block, re.M)
        if conda and script:
            header = re.match(r"\s*rule (\w+)", block)
            name = header.group(1) if header else re.search(DIRECTIVE.format("name"), block, re.M).group(1)
            found.append((name, conda.group(1).strip("\"'"), script.group(1).strip("\"'")))
    return found


def imports(source: str) -> set[str]:
    """Dotted names of the modules ``source`` imports (``from cesynth import x`` gives cesynth.x too; a relative
    import is read as from within cesynth), outside ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(source)
    typing_only = {id(n) for block in ast.walk(tree)
                   if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
                   for stmt in block.body for n in ast.walk(stmt)}
    names = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = ".".join(filter(None, ["cesynth" if node.level else "", node.module]))
            names.add(module)
            names.update(f"{module}.{a.name}" for a in node.names)
    return names


def third_party_imports(script: Path, package_dir: Path) -> set[str]:
    """Dotted names of the non-standard-library modules imported by ``script`` and the modules of the package in
    ``package_dir`` it imports, transitively."""
    todo, seen, third_party = [script], set(), set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imports(path.read_text()):
            top, *rest = name.split(".")
            if top == package_dir.name:
                module = package_dir.joinpath(*rest)
                module = module.with_suffix(".py") if module.with_suffix(".py").is_file() else module / "__init__.py"
                todo += [module] if module.is_file() else []  # cesynth.x.y where y is not a module: a name
            elif top not in sys.stdlib_module_names and top not in PROVIDED:
                third_party.add(name)
    return third_party


def package_name(requirement: str) -> str:
    """The normalised (PEP 503) name of a requirement line of an env file or requirements.txt."""
    name = re.match(r"[A-Za-z0-9_.-]+", requirement.strip()).group(0)
    name = re.sub(r"[-_.]+", "-", name).lower()
    return PYPI_NAME_OF_CONDA.get(name, name)


def env_packages(env: dict) -> set[str]:
    """Normalised names of the conda and pip packages of a conda environment file (the ``-e`` installs aside)."""
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = [r for d in env["dependencies"] if isinstance(d, dict) for r in d.get("pip", [])]
    return {package_name(r) for r in conda + pip if not r.startswith("-")}


def import_package(name: str) -> str:
    """The package that provides the module of dotted ``name``: that of its longest prefix in PACKAGE_OF_IMPORT,
    else its top-level name."""
    parts = name.split(".")
    prefixes = (".".join(parts[:n]) for n in range(len(parts), 0, -1))
    return package_name(next((PACKAGE_OF_IMPORT[p] for p in prefixes if p in PACKAGE_OF_IMPORT), parts[0]))


def missing_packages(imported: set[str], env: dict) -> list[str]:
    """The packages an environment lacks for these (dotted) import names."""
    have = env_packages(env)
    return sorted({p for p in map(import_package, imported) if p not in have})


def env_gaps(rules_dir: Path) -> list[str]:
    """One line per rule of ``rules_dir``/*.smk whose conda env lacks a package its script imports."""
    gaps = []
    for smk in sorted(rules_dir.glob("*.smk")):
        for rule, env_file, script in rules_with_env(smk.read_text()):
            env_path, script_path = (rules_dir / env_file).resolve(), (rules_dir / script).resolve()
            imported = third_party_imports(script_path, rules_dir.parent / "cesynth")
            for package in missing_packages(imported, yaml.safe_load(env_path.read_text())):
                gaps.append(f"rule {rule} ({smk.name}): {env_path.relative_to(rules_dir.parent)} lacks {package}, "
                            f"which {script_path.name} needs")
    return gaps


def test_every_rules_env_covers_what_its_script_imports():
    assert env_gaps(REPO / "rules") == []


def test_a_gap_is_named_with_rule_env_and_package(tmp_path):
    """An import added to a script whose env lacks it: rules, script, env and package in a copy of the layout."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "envs").mkdir()
    (tmp_path / "workflow_scripts").mkdir()
    (tmp_path / "cesynth" / "evaluate").mkdir(parents=True)
    (tmp_path / "rules" / "a.smk").write_text(
        'rule ok:\n    conda:\n        "../envs/e.yaml"\n    script:\n        "../workflow_scripts/ok.py"\n\n'
        'for _g in "12":\n    rule:\n        name:\n            "scored" + _g\n'
        '        conda:\n            "../envs/e.yaml"\n        script:\n            "../workflow_scripts/s.py"\n'
        'use rule ok as reused with:\n    output:\n        "x"\n')
    (tmp_path / "envs" / "e.yaml").write_text(
        "channels: [conda-forge]\ndependencies:\n  - python=3.11\n  - pytorch\n  - pip\n"
        "  - pip:\n      - numpy==2.3.5\n      - scikit_image>=0.26\n      - -e ..\n")
    (tmp_path / "workflow_scripts" / "ok.py").write_text("import os\nimport numpy as np\nfrom snakemake import x\n")
    (tmp_path / "workflow_scripts" / "s.py").write_text("from cesynth.evaluate import metrics\nimport torch\n")
    (tmp_path / "cesynth" / "evaluate" / "metrics.py").write_text(
        "from typing import TYPE_CHECKING\nfrom cesynth.io import save\nfrom skimage import measure\n"
        "if TYPE_CHECKING:\n    import pandas\n")
    (tmp_path / "cesynth" / "io.py").write_text("def save(x):\n    import yaml\n")
    assert env_gaps(tmp_path / "rules") == [
        'rule "scored" + _g (a.smk): envs/e.yaml lacks pyyaml, which s.py needs']
    (tmp_path / "workflow_scripts" / "ok.py").write_text("import numpy\nimport sklearn.metrics\n")
    assert env_gaps(tmp_path / "rules")[0] == "rule ok (a.smk): envs/e.yaml lacks scikit-learn, which ok.py needs"


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def test_pyproject_declares_what_requirements_pins():
    """Dependencies and extras together name requirements.txt's packages, less the test runner."""
    project = pyproject()
    pinned = {package_name(line) for line in (REPO / "requirements.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    declared = [*project["dependencies"], *(d for extra in project["optional-dependencies"].values() for d in extra)]
    assert {package_name(d) for d in declared if not d.startswith("cesynth[")} == pinned - {"pytest"}


def test_each_env_is_its_extra_of_the_package():
    """envs/<extra>.yaml installs the package's dependencies and that extra, no more and no less."""
    project = pyproject()
    core = {package_name(d) for d in project["dependencies"]}
    for env_file in sorted((REPO / "envs").glob("*.yaml")):
        extra = {package_name(d) for d in project["optional-dependencies"][env_file.stem]}
        assert env_packages(yaml.safe_load(env_file.read_text())) - {"python", "pip"} == core | extra, env_file.name
