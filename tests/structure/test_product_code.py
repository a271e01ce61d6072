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
# Product code without any sys.path manipulation (functions/ follows once its handlers import as packages).
NO_PATH_TRICKS = ("training", "localmode", "imgclf_cli", "benchmarks")


def sys_path_edits(source: str) -> list[int]:
    """Line numbers of every `sys.path` attribute use in the module (insert, append, assignment, ...)."""
    return [node.lineno for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Attribute) and node.attr == "path"
            and isinstance(node.value, ast.Name) and node.value.id == "sys"]


def test_sys_path_edits_are_detected() -> None:
    assert sys_path_edits("import sys\nsys.path.insert(0, 'x')\n") == [2]
    assert sys_path_edits("import sys\nsys.path[:0] = ['x']\n") == [2]
    assert sys_path_edits("import os\nos.path.join('a')\n") == []


def test_no_sys_path_manipulation_in_product_code() -> None:
    offenders = [f"{path.relative_to(REPO)}:{line}"
                 for folder in NO_PATH_TRICKS for path in sorted((REPO / folder).rglob("*.py"))
                 for line in sys_path_edits(path.read_text())]
    assert offenders == []


def test_the_locustfile_imports_its_neighbour_without_path_set_up(tmp_path: Path) -> None:
    """locust loads a locustfile with its folder on sys.path (locust/util/load_locustfile.py), so the load
    test's user imports bench_inference beside it; `--list` loads the file and lists its users."""
    env = {**os.environ, "LOADTEST_IMAGES": "1"}
    proc = subprocess.run([sys.executable, "-m", "locust", "-f", str(REPO / "benchmarks" / "locustfile_endpoint.py"),
                           "--list"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "EndpointClient" in proc.stdout
