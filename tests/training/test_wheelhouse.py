"""The serving dependencies: pinned once (training/requirements.txt), bundled as wheels in model.tar.gz's code/
so that an endpoint instance installs them with no index, and a PyPI code/requirements.txt when bundling fails.

Offline: the bundle tests build tiny local wheels with `pip wheel` and point pip at them instead of PyPI
(PIP_NO_INDEX/PIP_FIND_LINKS, the machine's pip config switched off); the code under test, pip's resolver and
downloader included, is the real one. The install runs the SageMaker PyTorch inference toolkit's own command
(`python -m pip install -r /opt/ml/model/code/requirements.txt`, torchserve.py `_install_requirements`) in a
fresh venv that has only the "image" packages, from another working directory, after the local index is gone.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from imgclf import wheelhouse

REPO = Path(__file__).resolve().parents[2]
TRAINING_REQUIREMENTS = REPO / "training" / "requirements.txt"
SERVING_RUNTIMES = ("onnx", "onnxruntime", "openvino")


def _requirements(path: Path) -> dict[str, Requirement]:
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            requirement = Requirement(line)
            found[requirement.name.lower()] = requirement
    return found


def test_serving_runtimes_are_pinned_to_the_versions_local_mode_runs() -> None:
    pins = _requirements(TRAINING_REQUIREMENTS)
    for name in SERVING_RUNTIMES:
        specifiers = list(pins[name].specifier)
        assert [s.operator for s in specifiers] == ["=="], f"{name} is not pinned: {pins[name]}"
        assert specifiers[0].version == version(name), f"{name}: pinned {specifiers[0].version}, .venv has " \
                                                       f"{version(name)}"


def test_local_mode_takes_the_pins_from_training_requirements() -> None:
    """requirements/local.txt includes training/requirements.txt and never lists a serving runtime itself."""
    local = REPO / "requirements" / "local.txt"
    assert "-r ../training/requirements.txt" in local.read_text().splitlines()
    assert not set(_requirements(local)) & set(SERVING_RUNTIMES)


# --- bundling, offline ----------------------------------------------------------------------------------

TINY_PROJECTS = {  # name: (version, dependencies); tinyframework stands for torch (the image has it)
    "tinyframework": ("1.0", ["frameworkdep"]),
    "frameworkdep": ("1.0", []),
    "tinydep": ("2.0", []),
    "tinyruntime": ("1.5", ["tinydep>=2", 'neverdep; python_version < "3"']),
    "tinymodel": ("0.3", ["tinyframework"]),
}


def _isolated_pip_env(**extra: str) -> dict[str, str]:
    """pip without this machine's config (its find-links and local indexes) or any index from the env."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    return {**env, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1", **extra}


def _use_isolated_pip(monkeypatch: pytest.MonkeyPatch, **extra: str) -> None:
    """The same for the pip that imgclf.wheelhouse runs (it inherits this process's environment)."""
    for key in [k for k in os.environ if k.startswith("PIP_")]:
        monkeypatch.delenv(key)
    for key, value in _isolated_pip_env(**extra).items():
        if key.startswith("PIP_"):
            monkeypatch.setenv(key, value)


@pytest.fixture(scope="module")
def tiny_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of wheels built with `pip wheel` from tiny local projects (the offline stand-in for PyPI)."""
    root = tmp_path_factory.mktemp("tiny")
    projects = []
    for name, (ver, deps) in TINY_PROJECTS.items():
        project = root / "src" / name
        (project / name).mkdir(parents=True)
        (project / name / "__init__.py").write_text(f"VERSION = {ver!r}\n")
        (project / "pyproject.toml").write_text(textwrap.dedent(f"""\
            [build-system]
            requires = ["setuptools>=61"]
            build-backend = "setuptools.build_meta"
            [project]
            name = "{name}"
            version = "{ver}"
            dependencies = {json.dumps(deps)}
            """))
        projects.append(str(project))
    index = root / "index"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(index), *projects], check=True, env=_isolated_pip_env(PIP_NO_INDEX="1"),
                   timeout=300)
    assert len(list(index.glob("*.whl"))) == len(TINY_PROJECTS)
    return index


def _requirements_file(tmp_path: Path) -> Path:
    path = tmp_path / "requirements.txt"
    path.write_text("# the serving requirements\ntinyruntime==1.5\ntinymodel>=0.1\n")
    return path


def test_bundle_installs_offline_from_code_wheels(tiny_index: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    _use_isolated_pip(monkeypatch, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(tiny_index))
    code = tmp_path / "model" / "code"
    code.mkdir(parents=True)
    requirements = _requirements_file(tmp_path)

    result = wheelhouse.write_serving_requirements(code, requirements, bundle=True,
                                                   provided={"tinyframework"})

    assert result.source == "wheels", result.reason
    # What the requirements need, minus the image's framework and what only the framework needs.
    assert sorted(w.split("-")[0] for w in result.wheels) == ["tinydep", "tinymodel", "tinyruntime"]
    assert sorted(p.name for p in (code / wheelhouse.WHEELS_DIR).iterdir()) == sorted(result.wheels)
    text = (code / "requirements.txt").read_text()
    assert text.splitlines()[2:4] == ["--no-index", "--find-links .wheels"]
    assert text.endswith(requirements.read_text())  # the original lines, unchanged: one list

    # The inference "image": a fresh interpreter that already has the framework (and its dependency).
    venv = tmp_path / "image"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = str(venv / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "--quiet", "tinyframework"], check=True, timeout=300,
                   env=_isolated_pip_env(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(tiny_index)))
    # No index, no find-links but the file's own: the toolkit's command, run from another directory.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    installed = subprocess.run([python, "-m", "pip", "install", "-r", str(code / "requirements.txt")],
                               cwd=elsewhere, capture_output=True, text=True, timeout=300,
                               env=_isolated_pip_env())
    assert installed.returncode == 0, installed.stdout[-2000:] + installed.stderr[-2000:]
    assert "Requirement already satisfied: tinyframework" in installed.stdout
    check = subprocess.run([python, "-c", "import tinyruntime, tinydep, tinymodel; print(tinyruntime.VERSION)"],
                           capture_output=True, text=True, timeout=60)
    assert check.stdout.strip() == "1.5", check.stderr


def test_without_an_index_the_requirements_fall_back_to_pypi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """A training job that cannot reach PyPI (network isolation): a clear warning, no partial wheels, and
    code/requirements.txt is the PyPI requirements file itself."""
    empty = tmp_path / "no-index"
    empty.mkdir()
    _use_isolated_pip(monkeypatch, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(empty))
    code = tmp_path / "code"
    (code / wheelhouse.WHEELS_DIR).mkdir(parents=True)
    (code / wheelhouse.WHEELS_DIR / "stale.whl").write_bytes(b"from an earlier run")
    requirements = _requirements_file(tmp_path)

    with caplog.at_level(logging.WARNING, logger="imgclf.wheelhouse"):
        result = wheelhouse.write_serving_requirements(code, requirements, bundle=True,
                                                       provided={"tinyframework"})

    assert result.source == "pypi"
    assert "tinyruntime" in result.reason  # pip's own words: no matching distribution
    assert (code / "requirements.txt").read_text() == requirements.read_text()
    assert not (code / wheelhouse.WHEELS_DIR).exists()
    assert any("installs from PyPI instead" in r.getMessage() for r in caplog.records)


def test_not_requested_copies_the_pypi_requirements(tmp_path: Path) -> None:
    requirements = _requirements_file(tmp_path)
    code = tmp_path / "code"
    code.mkdir()
    result = wheelhouse.write_serving_requirements(code, requirements, bundle=False)
    assert (result.source, (code / "requirements.txt").read_text()) == ("pypi", requirements.read_text())


def _report_item(name: str, ver: str, requires: list[str], requested: bool = False) -> dict:
    return {"metadata": {"name": name, "version": ver, "requires_dist": requires}, "requested": requested,
            "download_info": {"url": f"https://files.example/{name}-{ver}-py3-none-any.whl"}}


def test_the_closure_follows_the_target_python_not_the_running_one() -> None:
    """pip evaluates markers for the running interpreter; the walk evaluates them for the inference image.
    A dependency the target needs but pip did not resolve is an error (then: PyPI fallback), never a gap."""
    report = {"install": [
        _report_item("runtime", "1.0", ['backport; python_version < "3.12"', "torch", 'dev; extra == "test"'],
                     requested=True),
        _report_item("backport", "1.0", []),
        _report_item("torch", "9.9", ["huge-cuda"]),
        _report_item("huge-cuda", "1.0", []),
    ]}
    on_311 = wheelhouse.serving_closure(report, wheelhouse.inference_target("3.11"))
    on_312 = wheelhouse.serving_closure(report, wheelhouse.inference_target("3.12"))
    assert [w.name for w in on_311] == ["backport", "runtime"]
    assert [w.name for w in on_312] == ["runtime"]
    missing = {"install": [_report_item("runtime", "1.0", ['backport; python_version < "3.12"'], requested=True)]}
    with pytest.raises(wheelhouse.WheelhouseError, match="backport"):
        wheelhouse.serving_closure(missing, wheelhouse.inference_target("3.11"))


def test_the_target_accepts_only_wheels_the_oldest_inference_image_installs() -> None:
    target = wheelhouse.inference_target("3.12")
    options = target.pip_options()
    assert options[:7] == ["--only-binary=:all:", "--implementation", "cp", "--python-version", "3.12", "--abi",
                           "cp312"]
    platforms = set(target.platforms)
    assert {"manylinux_2_28_x86_64", "manylinux_2_31_x86_64", "manylinux2014_x86_64"} <= platforms
    assert "manylinux_2_34_x86_64" not in platforms and not any("aarch64" in p for p in platforms)


def test_the_model_archiver_leaves_the_wheels_out_of_model_mar(tmp_path: Path) -> None:
    """At every start the toolkit archives /opt/ml/model with torch-model-archiver (torchserve.py
    `_adapt_to_ts_format`: --extra-files the model dir, default format = deflated .mar) before it installs
    code/requirements.txt; the hidden code/.wheels/ stays out of model.mar, the code it serves does not."""
    model = tmp_path / "model"
    (model / "code" / wheelhouse.WHEELS_DIR).mkdir(parents=True)
    (model / "code" / wheelhouse.WHEELS_DIR / "big-1.0-py3-none-any.whl").write_bytes(os.urandom(1 << 20))
    (model / "code" / "requirements.txt").write_text("--no-index\n")
    (model / "code" / "inference.py").write_text("")
    (model / "model.pt").write_bytes(b"weights")
    handler = tmp_path / "handler_service.py"
    handler.write_text("def handle(data, context):\n    return data\n")
    export = tmp_path / "ts"
    export.mkdir()
    # The console script torch-model-archiver runs model_archiver.model_packaging:generate_model_archive (its
    # entry_points.txt); run as a module, the same code needs no script next to this interpreter (a venv that
    # shares another's site-packages through a .pth file has the package but not the script).
    archiver = [sys.executable, "-m", "model_archiver.model_packaging"]
    subprocess.run([*archiver, "--model-name", "model", "--handler", str(handler), "--export-path", str(export),
                    "--version", "1", "--extra-files", str(model)], check=True, cwd=tmp_path, timeout=120)
    with zipfile.ZipFile(export / "model.mar") as mar:
        names = set(mar.namelist())
    assert {"model.pt", "code/requirements.txt", "code/inference.py"} <= names
    assert not [n for n in names if wheelhouse.WHEELS_DIR in n]
