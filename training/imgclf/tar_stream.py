"""Files out of a tar.gz read as a stream (an S3 object's body): nothing is extracted to disk and a large
model.tar.gz is never copied. SageMaker tars the model directory, so its files sit at the archive's root,
maybe as ./name. Pure (no torch): the Lambdas read model artifacts with it too."""

from __future__ import annotations

import tarfile
from collections.abc import Callable, Iterator
from typing import IO


def members(fileobj: IO[bytes], wanted: Callable[[str], bool]) -> Iterator[tuple[str, bytes]]:
    """(name without ./, bytes) of each regular file whose name `wanted` accepts, in archive order."""
    with tarfile.open(fileobj=fileobj, mode="r|gz") as archive:
        for member in archive:
            name = member.name.removeprefix("./")
            if member.isfile() and wanted(name):
                handle = archive.extractfile(member)
                if handle is not None:
                    yield name, handle.read()


def read_member(fileobj: IO[bytes], name: str) -> bytes | None:
    """The bytes of the file `name` at the archive's root, or None without one; stops reading at it."""
    return next((data for _, data in members(fileobj, lambda found: found == name)), None)
