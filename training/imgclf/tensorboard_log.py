"""TensorBoard output of a run: scalar event files for the learning curves, beside the torch.profiler
trace, in one run folder of the logdir:

    <tensorboard-dir>/<run>/events.out.tfevents.<time>.<host>.<pid>.<n>   loss/train, accuracy/valid, ...
    <tensorboard-dir>/<run>/<host>_<pid>.<ns>.pt.trace.json              torch.profiler (imgclf.profiling)

TensorBoard shows every folder holding event files as a run; the PyTorch profiler plugin lists every
folder holding `*.pt.trace.json` files (what torch.profiler.tensorboard_trace_handler writes) as a run.

Why our own writer rather than torch.utils.tensorboard.SummaryWriter: that one imports the `tensorboard`
package (the TensorBoard server, with grpcio, werkzeug, markdown, ...), which the SageMaker PyTorch
training images do not install (aws/deep-learning-containers pytorch/training/docker/2.6 Dockerfiles), and
training/requirements.txt, where we would have to add it, is also the endpoint's code/requirements.txt
(imgclf.artifacts): every endpoint instance, including a scale-out, would install TensorBoard to log
nothing. Scalars need only a small, stable part of the format, written here: TFRecord framing (length,
masked CRC-32C of the length, payload, masked CRC-32C of the payload) around `tensorflow.Event` protocol
buffers (tensorflow/core/util/event.proto, summary.proto). The tests read the files back with TensorBoard's
own EventAccumulator, which checks both CRCs.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from imgclf import contract

if TYPE_CHECKING:  # the writer needs no torch; the rule results are only read
    from imgclf.debugger import RuleResult


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1  # Castagnoli polynomial, reflected
        table.append(crc)
    return table


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC: rotate right by 15 bits and add a constant."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord(payload: bytes) -> bytes:
    length = struct.pack("<Q", len(payload))
    return (length + struct.pack("<I", masked_crc32c(length)) + payload
            + struct.pack("<I", masked_crc32c(payload)))


# Protocol buffer wire format, for the few fields used (field numbers from event.proto / summary.proto).
def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _key(field, 2) + _varint(len(payload)) + payload


def _event(wall_time: float, step: int, *, file_version: str | None = None, summary: bytes | None = None) -> bytes:
    """Event{wall_time = 1 (double), step = 2 (int64), file_version = 3 | summary = 5}."""
    out = _key(1, 1) + struct.pack("<d", wall_time) + _key(2, 0) + _varint(step & 0xFFFFFFFFFFFFFFFF)
    if file_version is not None:
        out += _length_delimited(3, file_version.encode())
    if summary is not None:
        out += _length_delimited(5, summary)
    return out


def _scalar_summary(tag: str, value: float) -> bytes:
    """Summary{value = 1: Summary.Value{tag = 1, simple_value = 2 (float)}}."""
    value_message = _length_delimited(1, tag.encode()) + _key(2, 5) + struct.pack("<f", value)
    return _length_delimited(1, value_message)


class ScalarWriter:
    """Appends scalar summaries to a new event file in `run_dir` (one file per writer, as TensorBoard's
    own writers do; a resumed job adds a file and TensorBoard merges them by step)."""

    def __init__(self, run_dir: Path):
        run_dir.mkdir(parents=True, exist_ok=True)
        now = time.time()
        self.path = run_dir / f"events.out.tfevents.{int(now)}.{socket.gethostname()}.{os.getpid()}.0"
        self._file: BinaryIO | None = self.path.open("wb")
        self._write(_event(now, 0, file_version="brain.Event:2"))

    def _write(self, event: bytes) -> None:
        if self._file is None:
            raise ValueError(f"{self.path} is closed")
        self._file.write(tfrecord(event))

    def add_scalar(self, tag: str, value: float, step: int, wall_time: float | None = None) -> None:
        self._write(_event(time.time() if wall_time is None else wall_time, step,
                           summary=_scalar_summary(tag, float(value))))

    def add_scalars(self, values: dict[str, float], step: int) -> None:
        now = time.time()
        for tag, value in values.items():
            self.add_scalar(tag, value, step, now)
        self.flush()

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def epoch_scalars(history_row: dict[str, float]) -> dict[str, float]:
    """The learning curves of one epoch (a training-history.json row) as TensorBoard tags."""
    tags = {f"{kind}/{split}": history_row[f"{split}_{kind}"]
            for kind in ("loss", "accuracy") for split in ("train", "valid", "test")}
    tags["time/epoch_seconds"] = history_row["epoch_seconds"]
    tags["time/train_images_per_second"] = history_row["train_images_per_second"]
    tags["optimizer/lr"] = history_row["lr"]
    return tags


def rule_scalars(results: list[RuleResult]) -> dict[str, float]:
    """Each debugger rule as a TensorBoard tag, with the value of its training metric (Error: none)."""
    return {f"rules/{r.sagemaker_rule}": contract.RULE_METRIC_VALUES[r.status] for r in results
            if r.status in contract.RULE_METRIC_VALUES}
