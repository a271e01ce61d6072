"""Shape rules for the product code that a reader relies on: no import-path tricks (every module is imported
through the project's packaging, SageMaker's source dir or the Lambda's own folder), checked on the source.
Pure: reads files with ast, imports nothing from the project."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# All the product code: the Lambdas and their layer, training, local mode, the CLI, the benchmarks and the
# state machine's tools.
PRODUCT_FOLDERS = ("functions", "training", "localmode", "imgclf_cli", "benchmarks", "statemachine")
# Loading a module from its file (importlib.util) bypasses the packaging as a sys.path edit does.
FILE_LOADERS = {"spec_from_file_location", "module_from_spec", "SourceFileLoader"}


def path_tricks(source: str) -> list[int]:
    """Line numbers of every `sys.path` attribute use in the module (insert, append, assignment, ...) and of
    every file loader it names."""
    return sorted(node.lineno for node in ast.walk(ast.parse(source))
                  if (isinstance(node, ast.Attribute) and node.attr == "path"
                      and isinstance(node.value, ast.Name) and node.value.id == "sys")
                  or (isinstance(node, ast.Attribute) and node.attr in FILE_LOADERS)
                  or (isinstance(node, ast.alias) and node.name in FILE_LOADERS))


def test_path_tricks_are_detected() -> None:
    assert path_tricks("import sys\nsys.path.insert(0, 'x')\n") == [2]
    assert path_tricks("import sys\nsys.path[:0] = ['x']\n") == [2]
    assert path_tricks("import importlib.util\ns = importlib.util.spec_from_file_location('m', 'm.py')\n") == [2]
    assert path_tricks("from importlib.util import module_from_spec\n") == [1]
    assert path_tricks("import os\nos.path.join('a')\n") == []


def test_no_import_path_tricks_in_product_code() -> None:
    """Every product module imports through the packaging (pyproject's package-dir), SageMaker's source dir
    or the Lambda's own folder."""
    offenders = [f"{path.relative_to(REPO)}:{line}"
                 for folder in PRODUCT_FOLDERS for path in sorted((REPO / folder).rglob("*.py"))
                 for line in path_tricks(path.read_text())]
    assert offenders == []


def test_the_locustfile_imports_its_neighbour_without_path_set_up(tmp_path: Path) -> None:
    """locust loads a locustfile with its folder on sys.path (locust/util/load_locustfile.py), so the load
    test's user imports bench_inference beside it; `--list` loads the file and lists its users."""
    env = {**os.environ, "LOADTEST_IMAGES": "1"}
    proc = subprocess.run([sys.executable, "-m", "locust", "-f", str(REPO / "benchmarks" / "locustfile_endpoint.py"),
                           "--list"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "EndpointClient" in proc.stdout
