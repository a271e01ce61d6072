"""train.py and inference.py import `imgclf` with no sys.path set-up of their own, laid out as SageMaker lays
them out, in a fresh interpreter that has the third-party packages but not this project installed:

- training: the source dir (training/, uploaded as sourcedir.tar.gz) is unpacked into /opt/ml/code and run
  as `python train.py ...` there; Python puts the script's folder first on sys.path
  (https://docs.python.org/3/library/sys.html#sys.path).
- serving: model.tar.gz's code/ folder (written by imgclf.artifacts.write_code_dir) is on sys.path when the
  PyTorch inference container imports inference.py
  (https://sagemaker.readthedocs.io/en/stable/frameworks/pytorch/using_pytorch.html#model-directory-structure).

`python -S` keeps site-packages' .pth files (the editable install of this project among them) out; only the
folders that hold the third-party packages go on PYTHONPATH.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

from imgclf import artifacts

TRAINING_DIR = Path(__file__).resolve().parents[2] / "training"


def bare_interpreter(*args: str, cwd: Path, path: list[Path]) -> subprocess.CompletedProcess:
    """`python -S args` with only `path` (and the third-party packages' folders) importable."""
    third_party = {str(Path(importlib.util.find_spec(name).origin).parents[1]) for name in ("torch", "numpy", "PIL")}
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = os.pathsep.join([*map(str, path), *sorted(third_party)])
    return subprocess.run([sys.executable, "-S", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=180)


def test_the_bare_interpreter_does_not_see_the_project(tmp_path: Path) -> None:
    proc = bare_interpreter("-c", "import imgclf", cwd=tmp_path, path=[])
    assert proc.returncode != 0 and "No module named 'imgclf'" in proc.stderr


def test_train_py_runs_from_the_source_dir_as_sagemaker_unpacks_it(tmp_path: Path) -> None:
    code = tmp_path / "opt" / "ml" / "code"
    shutil.copytree(TRAINING_DIR, code, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    proc = bare_interpreter("train.py", "--help", cwd=code, path=[])
    assert proc.returncode == 0, proc.stderr
    assert "--backbone" in proc.stdout and "--epochs" in proc.stdout


def test_inference_py_imports_from_the_models_code_folder(tmp_path: Path) -> None:
    model_dir = tmp_path / "opt" / "ml" / "model"
    artifacts.write_code_dir(model_dir)
    code = model_dir / "code"
    probe = "import inference; print(inference.serving.__file__); print(callable(inference.model_fn))"
    proc = bare_interpreter("-c", probe, cwd=tmp_path, path=[code])
    assert proc.returncode == 0, proc.stderr
    serving_file, model_fn_callable = proc.stdout.split()
    assert Path(serving_file).resolve() == (code / "imgclf" / "serving.py").resolve()
    assert model_fn_callable == "True"
