"""The smoke sample train.py ships in the model directory (imgclf.smoke_sample), and the post-deploy check
(imgclf.smoke_check) run against the model served as the endpoint serves it (serving.invoke)."""

from __future__ import annotations

import copy
import io
import json
import tarfile
from pathlib import Path

import pytest

from imgclf import runtimes, serving, smoke_check, smoke_sample


def _sample(model_dir: Path) -> dict:
    return json.loads((model_dir / smoke_check.SAMPLE_FILE).read_text())


def test_training_ships_a_deterministic_sample_with_every_runnable_runtime(trained_model_dir: Path) -> None:
    sample = smoke_check.validate_sample(_sample(trained_model_dir))
    assert 1 <= len(sample["images"]) <= smoke_check.SAMPLE_SIZE
    assert {image["content_type"] for image in sample["images"]} == {"image/jpeg"}
    assert all(len(a["predictions"]) == smoke_check.TOP_K for a in sample["recordings"]["torch"]["answers"])
    metadata = json.loads((trained_model_dir / "metadata.json").read_text())
    eligible = [n for n in runtimes.ranked_candidates(metadata.get("serving"))
                if runtimes.unavailable_reason(runtimes.VARIANTS[n], trained_model_dir) is None]
    assert set(sample["recordings"]) == {"torch", *eligible}
    # the same model and test split give the same images (the choice is deterministic)
    test_dir = trained_model_dir.parent / "data" / "test"
    samples = [(p, i) for i, folder in enumerate(sorted(test_dir.iterdir())) for p in sorted(folder.iterdir())]
    again = smoke_sample.record(trained_model_dir, samples, test_dir)
    assert [i["name"] for i in again["images"]] == [i["name"] for i in sample["images"]]


@pytest.mark.parametrize("runtime", ["torch", "auto"])
def test_the_served_model_passes_its_own_smoke_test(trained_model_dir: Path, runtime: str) -> None:
    sample = _sample(trained_model_dir)
    model = serving.load_model(trained_model_dir, runtime=runtime)

    def invoke(body: bytes, content_type: str) -> dict:
        text, _ = serving.invoke(model, body, content_type, "application/json",
                                 custom_attributes=f"top_k={smoke_check.TOP_K}")
        return json.loads(text)

    report = smoke_check.run(sample, invoke)
    assert report.passed, report.summary()
    assert report.runtime == model.runtime_name


def test_a_different_model_fails_with_the_evidence(trained_model_dir: Path) -> None:
    sample = _sample(trained_model_dir)
    answers = copy.deepcopy(sample["recordings"]["torch"]["answers"])
    for answer in answers:  # another model: the same labels in another order
        predictions = answer["predictions"]
        predictions[0]["label"], predictions[1]["label"] = predictions[1]["label"], predictions[0]["label"]
        answer["runtime"] = "torch"
    report = smoke_check.check(sample, answers)
    assert not report.passed
    assert "top-1" in report.summary() and sample["images"][0]["name"] in report.summary()


def test_the_sample_is_read_from_model_tar_gz_as_a_stream(trained_model_dir: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(trained_model_dir, arcname=".")
    buffer.seek(0)
    assert smoke_check.read_sample_from_tar(buffer) == _sample(trained_model_dir)
