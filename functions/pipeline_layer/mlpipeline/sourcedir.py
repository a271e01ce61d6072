"""The training source as SageMaker's framework containers want it: sourcedir.tar.gz with train.py at the top.

Deterministic (sorted entries, zeroed timestamps/owners, fixed gzip header), so the same source always
gives the same bytes and the same sha256: the S3 key `code/sourcedir-<sha256>.tar.gz` is then
content-addressed and uploaded once per source version (what the SageMaker SDK would upload on every
fit(), we upload on first use).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from pathlib import Path

# What SageMaker needs from training/: the entry points, the package, and the pip requirements the
# container installs before running train.py.
INCLUDED_TOP_LEVEL = ("train.py", "inference.py", "requirements.txt", "imgclf")
_EXCLUDED_PARTS = {"__pycache__", ".pytest_cache", ".ipynb_checkpoints"}
_EXCLUDED_SUFFIXES = (".pyc", ".pyo")


def _files(source_dir: Path) -> list[Path]:
    files: list[Path] = []
    for name in INCLUDED_TOP_LEVEL:
        path = source_dir / name
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files.extend(p for p in path.rglob("*") if p.is_file())
    return sorted(
        (
            p
            for p in files
            if not _EXCLUDED_PARTS.intersection(p.relative_to(source_dir).parts)
            and p.suffix not in _EXCLUDED_SUFFIXES
        ),
        key=lambda p: p.relative_to(source_dir).as_posix(),
    )


def build_sourcedir_tarball(source_dir: Path) -> bytes:
    """sourcedir.tar.gz bytes of `source_dir` (train.py at the archive root); same input, same bytes."""
    source_dir = Path(source_dir)
    files = _files(source_dir)
    if not any(p.name == "train.py" and p.parent == source_dir for p in files):
        raise FileNotFoundError(f"{source_dir} has no train.py: not a training source directory")
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in files:
            info = tarfile.TarInfo(path.relative_to(source_dir).as_posix())
            data = path.read_bytes()
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    compressed = io.BytesIO()
    with gzip.GzipFile(fileobj=compressed, mode="wb", mtime=0, filename="") as gz:
        gz.write(raw.getvalue())
    return compressed.getvalue()


def sourcedir_key(tarball: bytes, prefix: str = "code/") -> str:
    """The content-addressed S3 key of a sourcedir tarball."""
    return f"{prefix}sourcedir-{hashlib.sha256(tarball).hexdigest()}.tar.gz"
