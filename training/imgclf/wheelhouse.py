"""The serving dependencies as wheels inside model.tar.gz, so that an endpoint instance needs no PyPI.

SageMaker's PyTorch inference container installs `code/requirements.txt` on every instance start, before it
imports inference.py: `[sys.executable, "-m", "pip", "install", "-r", "/opt/ml/model/code/requirements.txt"]`
(aws/sagemaker-pytorch-inference-toolkit, src/sagemaker_pytorch_serving_container/torchserve.py,
`_install_requirements`; the same call in aws/sagemaker-inference-toolkit,
src/sagemaker_inference/model_server.py). A failed install stops the container ("failed to install required
packages"), so with a PyPI requirements file every new instance, a scale-out at 3 a.m. included, downloads
the serving runtimes again and fails when PyPI is unreachable from the endpoint.

At the end of the final training job (`--bundle-serving-wheels`, set by the pipeline's CreateTrainingJob),
`write_serving_requirements`:

1. resolves training/requirements.txt for the inference image's Python and platform with pip's own resolver
   (`pip install --dry-run --report`: nothing is installed, only wheel metadata is read);
2. downloads exactly those wheels (`pip download --no-deps`) into code/.wheels/, except the framework the image
   already has (`PROVIDED_BY_IMAGE`: torch, and whatever only torch needs, several GB of CUDA wheels);
3. writes code/requirements.txt as `--no-index`, `--find-links .wheels` and then training/requirements.txt's own
   lines (one list of requirements). pip resolves a relative `--find-links` inside a requirements file against
   that file's directory when the path exists there (pypa/pip, src/pip/_internal/req/req_file.py,
   `handle_option_line`), so the toolkit's working directory does not matter. Packages the image already has in
   a satisfying version (numpy, pillow) stay as they are: pip installs only what is missing.

The training job can reach PyPI: SageMaker's training toolkit installed the same requirements from it when the
job started. When it cannot (network isolation, a VPC without a NAT gateway, a private index) or the resolve
fails, a warning says why, no partial wheels stay behind, and code/requirements.txt is training/requirements.txt:
the instances then install from PyPI, as before.

Our own code rather than a library: pip is the resolver and the downloader; what is ours is choosing the target
(below) and leaving the image's framework out, which no pip option does (there is no "already provided" flag
for a target that is not the running environment).
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

logger = logging.getLogger(__name__)

# code/.wheels/, next to code/requirements.txt. Hidden on purpose: at every start, before the pip install, the
# toolkit runs torch-model-archiver with `--extra-files /opt/ml/model` (torchserve.py `_adapt_to_ts_format`),
# which copies the whole model dir and deflates it into model.mar, but leaves out folders whose name starts with
# "." (pytorch/serve, model-archiver/model_archiver/model_packaging_utils.py, `directory_filter`). With the
# wheels visible, archiving + unpacking took 6.6 s instead of 0.3 s here (benchmarks/bench_serving_install.py).
WHEELS_DIR = ".wheels"
REQUIREMENTS_FILE = "requirements.txt"
# The framework of the AWS PyTorch inference images: never bundled (nor what only it depends on).
PROVIDED_BY_IMAGE: frozenset[str] = frozenset({"torch"})
# The inference images the pipeline selects (functions/pipeline_layer/mlpipeline/image_uris.json) are x86_64
# (no Graviton images in the table) and run Ubuntu 20.04 (PyTorch 2.3: glibc 2.31) or 22.04 (2.4-2.6: glibc
# 2.35), per aws/deep-learning-containers' available_images.md and release notes
# (docs/releasenotes/pytorch/pytorch-inference-2.6-cpu-sagemaker.md: "...-py312-ubuntu22.04-sagemaker").
# Accepting manylinux tags up to the oldest of them keeps the bundle installable on every one.
SERVING_ARCH = "x86_64"
SERVING_GLIBC_MAX_MINOR = 31  # manylinux_2_31 = glibc 2.31 (Ubuntu 20.04)
# End-of-training budget for both pip calls together: they took 35-56 s here; a network that drops packets (a
# VPC without egress) must not hold a billed instance for long.
DEFAULT_TIMEOUT_S = 600.0
PIP_NETWORK_OPTIONS = ("--timeout", "20", "--retries", "2")


class WheelhouseError(RuntimeError):
    """The bundle could not be built (the reason is logged; code/requirements.txt falls back to PyPI)."""


@dataclass(frozen=True)
class ServingTarget:
    """The interpreter and platform of the inference image that will install the wheels."""

    python_version: str  # "3.12"
    platforms: tuple[str, ...]

    @property
    def abi(self) -> str:
        return "cp" + self.python_version.replace(".", "")

    def pip_options(self) -> list[str]:
        """pip's options that resolve and download for this target instead of the running interpreter."""
        options = ["--only-binary=:all:", "--implementation", "cp", "--python-version", self.python_version,
                   "--abi", self.abi]
        for platform in self.platforms:
            options += ["--platform", platform]
        return options

    def marker_environment(self) -> dict[str, str]:
        """PEP 508 marker values of the target (for the dependency walk; pip's report uses the running one)."""
        from packaging.markers import default_environment

        env = dict(default_environment())
        env.update(python_version=self.python_version, sys_platform="linux", platform_system="Linux",
                   platform_machine=SERVING_ARCH, implementation_name="cpython",
                   platform_python_implementation="CPython")
        if not env["python_full_version"].startswith(self.python_version + "."):
            env["python_full_version"] = self.python_version + ".0"
        return env

    def describe(self) -> str:
        return f"CPython {self.python_version}, manylinux glibc <= 2.{SERVING_GLIBC_MAX_MINOR} {SERVING_ARCH}"


def manylinux_platforms(max_minor: int = SERVING_GLIBC_MAX_MINOR, arch: str = SERVING_ARCH) -> tuple[str, ...]:
    """Every manylinux tag a glibc 2.<max_minor> system installs (PEP 600), newest first, legacy aliases too."""
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(max_minor, 4, -1)]
    return (*tags, f"manylinux2014_{arch}", f"manylinux2010_{arch}", f"manylinux1_{arch}")


def inference_target(python_version: str | None = None) -> ServingTarget:
    """The inference image's target. Its Python is this interpreter's by default: the pipeline picks the
    training and the inference image from the same FrameworkVersion/PythonVersion (mlpipeline.runs.plan_run)."""
    version = python_version or f"{sys.version_info.major}.{sys.version_info.minor}"
    return ServingTarget(python_version=version, platforms=manylinux_platforms())


@dataclass(frozen=True)
class Wheel:
    name: str
    version: str
    filename: str


@dataclass
class ServingRequirements:
    """What code/requirements.txt installs from: the bundled wheels or PyPI (and why)."""

    source: Literal["wheels", "pypi"]
    reason: str
    target: str | None = None
    wheels: list[str] = field(default_factory=list)
    bytes: int = 0
    seconds: float = 0.0

    def as_metadata(self) -> dict[str, Any]:
        return {"source": self.source, "reason": self.reason, "target": self.target, "wheels": self.wheels,
                "bytes": self.bytes, "seconds": round(self.seconds, 2)}


@contextmanager
def _default_sigchld() -> Iterator[None]:
    """SIGCHLD at its default disposition (discarded) while pip runs, the previous handler back after.

    Why: at the end of training the process carries torch DataLoader's Python SIGCHLD handler (CPython installs
    handlers with SA_ONSTACK) and an alternate signal stack that OpenVINO's CPU plugin set on the main thread
    during the export and that is no longer mapped. Delivering pip's exit signal then kills train.py with a
    kernel SIGSEGV (si_code SI_KERNEL: no signal frame could be written); seen here under gdb/strace with
    openvino 2026.4 and torch 2.13. With the default disposition the kernel delivers nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGCHLD, previous)


def _pip(args: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *PIP_NETWORK_OPTIONS, *args]
    try:
        with _default_sigchld():
            return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=timeout)
    except subprocess.CalledProcessError as exc:
        tail = " | ".join((exc.stderr or exc.stdout or "").strip().splitlines()[-4:])
        raise WheelhouseError(f"pip {args[0]} failed (exit {exc.returncode}): {tail}") from exc
    except subprocess.TimeoutExpired as exc:
        raise WheelhouseError(f"pip {args[0]} did not finish in {timeout:.0f} s (no route to the index?)") from exc


def serving_closure(report: dict[str, Any], target: ServingTarget,
                    provided: Iterable[str] = PROVIDED_BY_IMAGE) -> list[Wheel]:
    """The wheels of pip's installation report that the inference image needs: everything reachable from the
    requested packages without passing through a `provided` one (whose own dependencies the image has)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    items = {canonicalize_name(item["metadata"]["name"]): item for item in report["install"]}
    skip = {canonicalize_name(name) for name in provided}
    env = target.marker_environment()
    todo = [(name, frozenset(item.get("requested_extras") or ())) for name, item in items.items()
            if item.get("requested")]
    seen: set[tuple[str, frozenset[str]]] = set()
    keep: set[str] = set()
    while todo:
        name, extras = todo.pop()
        if name in skip or (name, extras) in seen:
            continue
        seen.add((name, extras))
        keep.add(name)
        for line in items[name]["metadata"].get("requires_dist") or ():
            requirement = Requirement(line)
            if requirement.marker is not None and not any(
                    requirement.marker.evaluate({**env, "extra": extra}) for extra in (extras or {""})):
                continue
            dependency = canonicalize_name(requirement.name)
            if dependency in skip:
                continue
            if dependency not in items:
                raise WheelhouseError(f"{name} needs {requirement} on {target.describe()}, which pip did not "
                                      "resolve (its markers differ for the running interpreter)")
            todo.append((dependency, frozenset(requirement.extras)))
    return sorted((Wheel(name=items[n]["metadata"]["name"], version=items[n]["metadata"]["version"],
                         filename=items[n]["download_info"]["url"].rsplit("/", 1)[-1]) for n in keep),
                  key=lambda wheel: canonicalize_name(wheel.name))


def resolve_serving_wheels(requirements: Path, target: ServingTarget,
                           provided: Iterable[str] = PROVIDED_BY_IMAGE,
                           timeout: float = DEFAULT_TIMEOUT_S) -> list[Wheel]:
    """pip's resolution of `requirements` for `target`, without the image's framework. Reads metadata only."""
    with tempfile.TemporaryDirectory(prefix="wheelhouse-") as scratch:
        report = Path(scratch) / "report.json"
        _pip(["install", "--dry-run", "--quiet", "--target", str(Path(scratch) / "target"), "--report", str(report),
              *target.pip_options(), "-r", str(requirements)], timeout)
        return serving_closure(json.loads(report.read_text()), target, provided)


def download_wheels(wheels: Sequence[Wheel], target: ServingTarget, dest: Path,
                    timeout: float = DEFAULT_TIMEOUT_S) -> list[Path]:
    """Exactly these wheels for `target` into `dest`; checks that each name==version arrived as one wheel."""
    from packaging.utils import canonicalize_name, parse_wheel_filename
    from packaging.version import Version

    dest.mkdir(parents=True, exist_ok=True)
    _pip(["download", "--quiet", "--no-deps", "--dest", str(dest), *target.pip_options(),
          *(f"{wheel.name}=={wheel.version}" for wheel in wheels)], timeout)
    files = sorted(dest.glob("*.whl"))
    got = {(name, str(version)) for name, version, _, _ in (parse_wheel_filename(f.name) for f in files)}
    wanted = {(canonicalize_name(w.name), str(Version(w.version))) for w in wheels}
    if got != wanted or len(files) != len(wanted):
        raise WheelhouseError(f"pip download brought {sorted(got)}, expected {sorted(wanted)}")
    return files


def bundled_requirements_text(requirements_text: str, target: ServingTarget) -> str:
    """code/requirements.txt for the bundle: no index, the wheels next to it, then the original lines."""
    return (f"# Written at the end of training by imgclf.wheelhouse: every dependency below is in {WHEELS_DIR}/\n"
            f"# (for {target.describe()}), so an endpoint instance installs them without PyPI.\n"
            "--no-index\n"
            f"--find-links {WHEELS_DIR}\n"
            "# training/requirements.txt:\n"
            f"{requirements_text.rstrip()}\n")


def write_serving_requirements(code_dir: Path, requirements: Path, bundle: bool,
                               target: ServingTarget | None = None,
                               provided: Iterable[str] = PROVIDED_BY_IMAGE,
                               timeout: float = DEFAULT_TIMEOUT_S) -> ServingRequirements:
    """code/requirements.txt (and code/.wheels/ when `bundle`): from the bundled wheels, else from PyPI."""
    destination = code_dir / REQUIREMENTS_FILE
    wheels_dir = code_dir / WHEELS_DIR
    shutil.rmtree(wheels_dir, ignore_errors=True)
    if not bundle:
        shutil.copy2(requirements, destination)
        return ServingRequirements(source="pypi", reason="not requested (--bundle-serving-wheels false)")
    target = target or inference_target()
    started = time.perf_counter()
    try:
        wheels = resolve_serving_wheels(requirements, target, provided, timeout)
        files = download_wheels(wheels, target, wheels_dir, max(1.0, timeout - (time.perf_counter() - started)))
    except (WheelhouseError, OSError, ValueError, KeyError) as exc:
        shutil.rmtree(wheels_dir, ignore_errors=True)
        shutil.copy2(requirements, destination)
        reason = f"could not bundle the serving wheels: {exc}"
        logger.warning("%s -- code/requirements.txt installs from PyPI instead, on every endpoint instance start "
                       "(the endpoint then needs a route to PyPI)", reason)
        return ServingRequirements(source="pypi", reason=reason, target=target.describe(),
                                   seconds=time.perf_counter() - started)
    destination.write_text(bundled_requirements_text(requirements.read_text(), target))
    size = sum(f.stat().st_size for f in files)
    seconds = time.perf_counter() - started
    logger.info("bundled %d serving wheels (%.1f MB, %s) into %s in %.1f s", len(files), size / 1e6,
                target.describe(), wheels_dir, seconds)
    return ServingRequirements(source="wheels", reason="bundled", target=target.describe(),
                               wheels=[f.name for f in files], bytes=size, seconds=seconds)
