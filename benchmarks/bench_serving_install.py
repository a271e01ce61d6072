"""What code/requirements.txt adds to an endpoint instance's start: pip from PyPI vs from the bundled wheels.

    .venv/bin/python benchmarks/bench_serving_install.py [--python python3.11] [--repeat 1] [--bundle-only]

(~6-10 minutes; downloads ~280 MB of wheels from PyPI for the bundles and ~140 MB per PyPI install.)

SageMaker's PyTorch inference container runs `python -m pip install -r /opt/ml/model/code/requirements.txt` on
every instance start before it loads the model (imgclf.wheelhouse cites the toolkit's code). This reproduces
that step on this machine, in one run:

1. the bundle, as the final training job builds it (imgclf.wheelhouse.write_serving_requirements, from PyPI):
   wheels, megabytes, seconds, and what it adds to model.tar.gz;
2. the "image": a fresh venv of the container's Python with what the AWS PyTorch inference images ship and we
   rely on (torch, numpy, pillow; installed once, not timed), copied afresh for every measured install;
3. timed, the two steps of the toolkit's start that code/ affects, for code/ from PyPI (training/requirements.txt)
   and bundled (code/requirements.txt --no-index + code/.wheels): torch-model-archiver on the model dir (plus
   unpacking model.mar; also for the wheels in a visible code/wheels/, to show why the folder is hidden), and
   `pip install -r code/requirements.txt` in a copy of the image venv, no pip cache (a new instance has none),
   from another working directory; then the serving runtimes are imported.

Honest limits: this machine's network and disks are not SageMaker's (an instance in a region with a NAT
gateway may download faster or slower from PyPI; model.tar.gz itself comes from S3 in-region), the CPU count
differs, and pip is the venv's own. Python: 3.11 by default (the py311 images, FrameworkVersion 2.3-2.5)
because the image's torch must be installed here and this machine only has a CPU torch wheel for CPython 3.11
(PyPI's Linux torch is the multi-GB CUDA build); the bundle is also built for --bundle-python (default 3.12,
the default image) to report its size. pip's own configuration on this machine (local find-links and indexes)
is switched off for every measured step: PyPI only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

from imgclf import wheelhouse

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAINING_REQUIREMENTS = REPO_ROOT / "training" / "requirements.txt"
IMAGE_PACKAGES = ("torch==2.13.0", "numpy", "pillow")  # what the inference image already has (not timed)
IMPORT_CHECK = "import onnx, onnxruntime, openvino, efficientnet_lite_pytorch, psutil; print(onnxruntime.__version__)"



MACHINE_ENV = dict(os.environ)


def pypi_only_env() -> dict[str, str]:
    """pip with PyPI only: none of this machine's pip config (find-links, local indexes) or PIP_* settings."""
    env = {k: v for k, v in MACHINE_ENV.items() if not k.startswith("PIP_")}
    return {**env, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def run(cmd: list[str], **kwargs) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True, **kwargs)
    return time.perf_counter() - started


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def targz_bytes(root: Path, scratch: Path) -> int:
    archive = scratch / f"{root.name}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname=root.name)
    size = archive.stat().st_size
    archive.unlink()
    return size


def build_bundle(code: Path, python_version: str) -> wheelhouse.ServingRequirements:
    code.mkdir(parents=True)
    os.environ.clear()
    os.environ.update(pypi_only_env())  # the pip that wheelhouse runs inherits this process's environment
    try:
        result = wheelhouse.write_serving_requirements(code, TRAINING_REQUIREMENTS, bundle=True,
                                                       target=wheelhouse.inference_target(python_version))
    finally:
        os.environ.clear()
        os.environ.update(MACHINE_ENV)
    if result.source != "wheels":
        raise SystemExit(f"could not build the bundle: {result.reason}")
    return result


def image_venv(python: str, path: Path) -> None:
    """A venv with the packages the inference image ships, built once and copied for every measured instance.
    This step may use this machine's pip config: that is where its CPU torch wheel lives."""
    print(f"building the image venv ({', '.join(IMAGE_PACKAGES)}) in {path} (not timed)...", flush=True)
    run([python, "-m", "venv", str(path)], timeout=300)
    run([str(path / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         *IMAGE_PACKAGES], env=MACHINE_ENV, timeout=1800)


def fresh_instance(image: Path, path: Path) -> Path:
    """A copy of the image venv (its python is a symlink to the same interpreter; pyvenv.cfg travels along)."""
    shutil.copytree(image, path, symlinks=True)
    return path / "bin" / "python"


def timed_install(venv_python: Path, requirements: Path, cwd: Path) -> float:
    """The toolkit's command: `python -m pip install -r <requirements>` (no cache, as on a new instance)."""
    return run([str(venv_python), "-m", "pip", "install", "--quiet", "--no-cache-dir", "-r", str(requirements)],
               cwd=cwd, env=pypi_only_env(), timeout=1800)


def check_imports(venv_python: Path) -> str:
    out = subprocess.run([str(venv_python), "-c", IMPORT_CHECK], check=True, capture_output=True, text=True,
                         timeout=300, cwd="/")
    return out.stdout.strip()


def archive_and_unpack(model: Path, scratch: Path) -> float:
    """The toolkit's torch-model-archiver call on the model dir (torchserve.py `_adapt_to_ts_format`: default
    format, a deflated model.mar), then unpacking model.mar as TorchServe does at load (here with Python's
    zipfile; TorchServe's frontend does it in Java)."""
    archiver = Path(sys.executable).with_name("torch-model-archiver")
    export, unpacked = scratch / "ts-models", scratch / "ts-unpacked"
    shutil.rmtree(export, ignore_errors=True)
    shutil.rmtree(unpacked, ignore_errors=True)
    export.mkdir()
    handler = scratch / "handler_service.py"
    handler.write_text("def handle(data, context):\n    return data\n")
    started = time.perf_counter()
    subprocess.run([str(archiver), "--model-name", "model", "--handler", str(handler), "--export-path", str(export),
                    "--version", "1", "--extra-files", str(model)], check=True, cwd=scratch, timeout=600)
    with zipfile.ZipFile(export / "model.mar") as mar:
        mar.extractall(unpacked)
    return time.perf_counter() - started


def model_dirs(bundle_code: Path, scratch: Path) -> dict[str, Path]:
    """code/ as each layout ships it (model.pt and the exports, the same in all three, are left out)."""
    layouts = {}
    for number, layout in enumerate(("PyPI", "bundled", "bundled, visible wheels/")):
        code = scratch / "layouts" / str(number) / "model" / "code"
        code.mkdir(parents=True)
        shutil.copytree(REPO_ROOT / "training" / "imgclf", code / "imgclf",
                        ignore=shutil.ignore_patterns("__pycache__"))
        if layout == "PyPI":
            shutil.copy2(TRAINING_REQUIREMENTS, code / "requirements.txt")
        else:
            shutil.copy2(bundle_code / "requirements.txt", code / "requirements.txt")
            wheels = wheelhouse.WHEELS_DIR if layout == "bundled" else "wheels"
            shutil.copytree(bundle_code / wheelhouse.WHEELS_DIR, code / wheels)
        layouts[layout] = code.parent
    return layouts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default="python3.11", help="the container's interpreter (default python3.11)")
    parser.add_argument("--bundle-python", default="3.12", help="also build the bundle for this Python (size)")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs of each step (default 1; best is kept)")
    parser.add_argument("--bundle-only", action="store_true", help="only build the bundles (no installs)")
    args = parser.parse_args()
    python_version = subprocess.run([args.python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                    check=True, capture_output=True, text=True).stdout.strip()

    with tempfile.TemporaryDirectory(prefix="bench-serving-install-") as tmp:
        scratch = Path(tmp)
        bundles = {}
        for version in dict.fromkeys([python_version, args.bundle_python]):
            code = scratch / f"model-{version}" / "code"
            result = build_bundle(code, version)
            bundles[version] = code
            wheels_gz = targz_bytes(code / wheelhouse.WHEELS_DIR, scratch)
            print(f"bundle for CPython {version}: {len(result.wheels)} wheels, {result.bytes / 1e6:.1f} MB "
                  f"({wheels_gz / 1e6:.1f} MB more in model.tar.gz), resolve + download from PyPI "
                  f"{result.seconds:.1f} s (once, at the end of the final training job)", flush=True)
        if args.bundle_only:
            return

        layouts = model_dirs(bundles[python_version], scratch)
        archive: dict[str, list[float]] = {layout: [] for layout in layouts}
        for _ in range(args.repeat):
            for layout, model in layouts.items():
                archive[layout].append(archive_and_unpack(model, scratch))
        for layout, seconds in archive.items():
            print(f"  model-archiver + unpack, {layout:>24}: {min(seconds):5.1f} s", flush=True)

        image = scratch / "image"
        image_venv(args.python, image)
        elsewhere = scratch / "cwd"
        elsewhere.mkdir()
        install: dict[str, list[float]] = {"PyPI": [], "bundled": []}
        for i in range(args.repeat):
            for layout in install:
                requirements = layouts[layout] / "code" / "requirements.txt"
                venv = scratch / f"instance-{layout}-{i}"
                venv_python = fresh_instance(image, venv)
                before = tree_bytes(venv)
                seconds = timed_install(venv_python, requirements, elsewhere)
                version = check_imports(venv_python)
                install[layout].append(seconds)
                print(f"  pip install -r code/requirements.txt, {layout:>7}, fresh CPython {python_version} venv: "
                      f"{seconds:6.1f} s (installed {(tree_bytes(venv) - before) / 1e6:.0f} MB; onnxruntime "
                      f"{version} imports)", flush=True)
                shutil.rmtree(venv)

    total = {layout: min(archive[layout]) + min(install[layout]) for layout in install}
    print(f"\nthe start-up steps code/ adds (best of {args.repeat}; archiver + unpack + pip install):")
    for layout in install:
        print(f"  {layout:>7}: {min(archive[layout]):5.1f} + {min(install[layout]):5.1f} = {total[layout]:5.1f} s")
    print(f"  ratio PyPI / bundled: {total['PyPI'] / total['bundled']:.2f}x; the bundled install needs no PyPI")


if __name__ == "__main__":
    main()
