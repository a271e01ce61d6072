"""The smoke sample train.py ships in the model directory (imgclf.smoke_sample), and the post-deploy check
(imgclf.smoke_check) run against the model served as the endpoint serves it (serving.invoke)."""

from __future__ import annotations

import copy
import io
import json
import shutil
import socket
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


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_local_mode_runs_the_same_check_and_restores_or_stops_the_endpoint(trained_model_dir: Path,
                                                                          tmp_path: Path) -> None:
    from localmode import endpoint as local_endpoint
    from localmode import pipeline

    other = tmp_path / "other-model"  # a model whose recording the served model does not reproduce
    shutil.copytree(trained_model_dir, other)
    sample = _sample(trained_model_dir)
    for answer in sample["recordings"]["torch"]["answers"]:
        top = answer["predictions"][0]
        top["probability"] = round(max(0.0, top["probability"] - 0.3), 6)
    sample["recordings"] = {"torch": sample["recordings"]["torch"]}
    (other / smoke_check.SAMPLE_FILE).write_text(json.dumps(sample))
    options = pipeline.RunOptions(runs_dir=tmp_path / "runs", port=_free_port(), workers=1, endpoint_name="smoke")

    def deploy(model_dir: Path) -> local_endpoint.LocalEndpoint:
        return local_endpoint.deploy(options.runs_dir, model_dir, name=options.endpoint_name, port=options.port,
                                     workers=1)

    try:
        first = deploy(trained_model_dir)
        assert pipeline.check_deployment(options, first, trained_model_dir, None)["passed"]
        with pytest.raises(pipeline.SmokeTestFailed, match="serves the previous model again"):
            pipeline.check_deployment(options, deploy(other), other, {"model_dir": str(trained_model_dir)})
        record = local_endpoint.read_record(options.runs_dir)
        assert record is not None and record.model_dir == str(trained_model_dir) and record.is_alive()
        with pytest.raises(pipeline.SmokeTestFailed, match="P\\(") as failed:
            pipeline.check_deployment(options, deploy(other), other, None)
        assert "was stopped" in str(failed.value) and local_endpoint.read_record(options.runs_dir) is None
    finally:
        local_endpoint.stop(options.runs_dir)
