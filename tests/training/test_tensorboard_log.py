"""imgclf.tensorboard_log writes event files that TensorBoard itself reads back (its EventAccumulator,
which checks both CRCs of every record)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

from imgclf import tensorboard_log


def _scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    accumulator = EventAccumulator(str(run_dir))
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def test_crc32c_matches_the_standard_and_tensorboard() -> None:
    assert tensorboard_log.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value (RFC 3720, B.4)
    for data in (b"", b"a", bytes(range(256)) * 3):
        assert tensorboard_log.masked_crc32c(data) == masked_crc32c(data)


def test_scalars_round_trip_through_tensorboard(tmp_path: Path) -> None:
    run = tmp_path / "logdir" / "train"
    writer = tensorboard_log.ScalarWriter(run)
    writer.add_scalars({"loss/train": 1.5, "loss/valid": 2.25}, step=1)
    writer.add_scalars({"loss/train": 0.75, "loss/valid": 1.125}, step=2)
    writer.close()
    assert writer.path.name.startswith("events.out.tfevents.")
    assert _scalars(run) == {"loss/train": [(1, 1.5), (2, 0.75)], "loss/valid": [(1, 2.25), (2, 1.125)]}
    with pytest.raises(ValueError, match="closed"):
        writer.add_scalar("loss/train", 0.5, 3)


def test_a_corrupt_record_is_refused_by_tensorboard(tmp_path: Path) -> None:
    """The reader does check the CRCs: flipping a byte of the last record's payload drops that record."""
    writer = tensorboard_log.ScalarWriter(tmp_path)
    writer.add_scalars({"loss/train": 1.0}, step=1)
    writer.add_scalars({"loss/train": 0.5}, step=2)
    writer.close()
    data = bytearray(writer.path.read_bytes())
    data[-6] ^= 0xFF  # inside the last event's payload (its 4-byte CRC follows)
    writer.path.write_bytes(bytes(data))
    assert _scalars(tmp_path) == {"loss/train": [(1, 1.0)]}


def test_epoch_scalars_cover_the_learning_curves() -> None:
    row = {"epoch": 3, "train_loss": 0.5, "train_accuracy": 0.8, "valid_loss": 0.6, "valid_accuracy": 0.75,
           "test_loss": 0.7, "test_accuracy": 0.7, "lr": 0.01, "epoch_seconds": 2.5, "train_images_per_second": 40.0}
    tags = tensorboard_log.epoch_scalars(row)
    assert {f"{k}/{s}" for k in ("loss", "accuracy") for s in ("train", "valid", "test")} <= set(tags)
    assert tags["loss/test"] == 0.7 and tags["accuracy/valid"] == 0.75 and tags["optimizer/lr"] == 0.01
