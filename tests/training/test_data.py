"""Dataset discovery: channels, class names from folders, skipped files, clear errors for bad data."""

from __future__ import annotations

import io
import shutil

import pytest
from PIL import Image

from imgclf import data


def test_class_names_come_from_folders() -> None:
    assert data.class_name_from_folder("001.Affenpinscher") == "Affenpinscher"
    assert data.class_name_from_folder("133.Yorkshire_terrier") == "Yorkshire_terrier"
    assert data.class_name_from_folder("cats") == "cats"
    assert data.class_name_from_folder("2001") == "2001"  # nothing left after a prefix: keep the name


def test_discover_data_dir_and_counts(dataset_factory) -> None:
    root = dataset_factory(num_classes=3)
    splits = data.discover(root, env={})
    assert splits.class_folders == ["001.Class_0", "002.Class_1", "003.Class_2"]
    assert splits.class_names == ["Class_0", "Class_1", "Class_2"]
    assert [len(splits.splits[s].samples) for s in data.SPLITS] == [36, 12, 12]
    assert splits.splits["train"].class_counts() == [12, 12, 12]


def test_sagemaker_channels(dataset_factory) -> None:
    root = dataset_factory()
    one = data.resolve_split_dirs(env={"SM_CHANNEL_TRAINING": str(root)})
    assert one == {s: root / s for s in data.SPLITS}
    per_split = {"SM_CHANNEL_TRAIN": str(root / "train"), "SM_CHANNEL_VALID": str(root / "valid"),
                 "SM_CHANNEL_TEST": str(root / "test")}
    assert data.resolve_split_dirs(env=per_split) == one
    # --data-dir wins over the channels.
    assert data.resolve_split_dirs(root, env={"SM_CHANNEL_TRAINING": "/nonexistent"}) == one
    with pytest.raises(data.DatasetError, match="no data"):
        data.resolve_split_dirs(env={})


def test_unreadable_and_non_image_files_are_skipped_and_counted(dataset_factory) -> None:
    root = dataset_factory()
    folder = root / "train" / "001.Class_0"
    (folder / "notes.txt").write_text("not an image")
    (folder / ".DS_Store").write_bytes(b"\x00\x01")
    good = (folder / "img_0.png").read_bytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 3])
    jpeg = io.BytesIO()
    Image.effect_noise((64, 64), 60).convert("RGB").save(jpeg, format="JPEG")
    (folder / "truncated.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])  # passes verify()
    (folder / "whole.jpg").write_bytes(jpeg.getvalue())
    splits = data.discover(root, env={})
    train = splits.splits["train"]
    assert len(train.samples) == 37 and train.num_skipped == 4
    assert {p.name for p, _ in train.skipped} == {"notes.txt", ".DS_Store", "truncated.png", "truncated.jpg"}
    assert splits.summary()["splits"]["train"]["skipped"] == 4


def test_missing_split_is_named(dataset_factory) -> None:
    root = dataset_factory()
    shutil.rmtree(root / "valid")
    with pytest.raises(data.DatasetError, match=r"missing split\(s\) \['valid'\]"):
        data.discover(root, env={})


def test_empty_class_is_named(dataset_factory) -> None:
    root = dataset_factory()
    folder = root / "test" / "002.Class_1"
    for f in folder.iterdir():
        f.unlink()
    (folder / "broken.jpg").write_bytes(b"garbage")
    with pytest.raises(data.DatasetError, match=r"split 'test'.*no readable image: \['002.Class_1'\]"):
        data.discover(root, env={})


def test_class_sets_differing_between_splits_are_named(dataset_factory) -> None:
    root = dataset_factory()
    shutil.rmtree(root / "valid" / "003.Class_2")
    (root / "test" / "004.Extra").mkdir()
    Image.new("RGB", (8, 8)).save(root / "test" / "004.Extra" / "x.png")
    with pytest.raises(data.DatasetError, match=r"'valid' lacks \['003.Class_2'\].*'test' has classes not in "
                                                r"'train': \['004.Extra'\]"):
        data.discover(root, env={})


def test_split_without_class_folders(dataset_factory) -> None:
    root = dataset_factory()
    shutil.rmtree(root / "test")
    (root / "test").mkdir()
    with pytest.raises(data.DatasetError, match=r"split 'test'.*has no class folders"):
        data.discover(root, env={})
