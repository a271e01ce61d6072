"""`imgclf aws capture-to-dataset`: capture files in AWS's documented format -> a dataset `imgclf aws upload`
accepts.

The capture records are built as AWS documents them
(https://docs.aws.amazon.com/sagemaker/latest/dg/model-monitor-data-capture-endpoint.html, "View Captured
Data": captureData.endpointInput/endpointOutput with observedContentType, mode, data, encoding;
eventMetadata.eventId/inferenceTime; eventVersion "0"), with the pipeline's DataCaptureConfig: the image
request base64-encoded (its type is not in CaptureContentTypeHeader), the answer as JSON text; the answers
are the endpoint's own (imgclf.serving.encode_output). The dataset is then put through the upload's own
local checks (imgclf_cli.upload.check_dataset: the manifest, every split, the training job's layout check).
"""

from __future__ import annotations

import base64
import io
import json
import uuid
from pathlib import Path

import numpy as np
import pytest
from mlpipeline import deployment_requests
from PIL import Image

from imgclf import contract, serving
from imgclf_cli import capture, upload
from imgclf_cli.errors import ExitCode
from imgclf_cli.main import main

CLASSES = ["001.Affenpinscher", "002.Afghan_hound"]


def _image(kind: str, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (24, 24, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=kind)
    return buffer.getvalue()


def _answer(label_index: int) -> str:
    probabilities = np.array([0.2, 0.2])
    probabilities[label_index] = 0.8
    text, content_type = serving.encode_output(serving.Prediction(probabilities, CLASSES, "onnx"),
                                               contract.JSON_CONTENT_TYPE)
    assert content_type in deployment_requests.DATA_CAPTURE_JSON_CONTENT_TYPES  # so SageMaker captures it as JSON text
    return text


def _record(image: bytes, content_type: str, answer: str | None, event_id: str | None = None,
            answer_encoding: str = "JSON") -> str:
    data = {"endpointInput": {"observedContentType": content_type, "mode": "INPUT",
                              "data": base64.b64encode(image).decode(), "encoding": "BASE64"}}
    if answer is not None:
        data["endpointOutput"] = {
            "observedContentType": contract.JSON_CONTENT_TYPE, "mode": "OUTPUT",
            "data": answer if answer_encoding == "JSON" else base64.b64encode(answer.encode()).decode(),
            "encoding": answer_encoding,
        }
    return json.dumps({"captureData": data,
                       "eventMetadata": {"eventId": event_id or str(uuid.uuid4()),
                                         "inferenceTime": "2026-12-01T10:30:45Z"},
                       "eventVersion": "0"})


def _capture_folder(root: Path, per_class: int = 40) -> Path:
    """The S3 layout SageMaker writes: <endpoint>/<variant>/yyyy/mm/dd/hh/<file>.jsonl."""
    hour = root / "imgclf-classifier" / "AllTraffic" / "2026" / "12" / "01" / "10"
    hour.mkdir(parents=True)
    lines = []
    for i in range(per_class * len(CLASSES)):
        kind, content_type = (("JPEG", contract.JPEG_CONTENT_TYPE) if i % 2 else ("PNG", contract.PNG_CONTENT_TYPE))
        lines.append(_record(_image(kind, i), content_type, _answer(i % len(CLASSES)),
                             event_id=f"00000000-0000-4000-8000-{i:012d}",
                             answer_encoding="BASE64" if i % 5 == 0 else "JSON"))
    (hour / "10-30-45-123-abcd.jsonl").write_text("\n".join(lines) + "\n")
    return root


def test_captured_requests_become_a_dataset_the_upload_accepts(tmp_path: Path, capsys) -> None:
    captures = _capture_folder(tmp_path / "captures")
    out = tmp_path / "captured"
    assert main(["aws", "capture-to-dataset", str(captures), "--out", str(out), "--holdout", "40",
                 "--version", "captured-2026-12-01"]) == ExitCode.OK
    images = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.suffix in (".jpg", ".png"))
    assert len(images) == 80
    # Each image under its split and the label the model gave it, named by its eventId, with its own type.
    index = [json.loads(line) for line in (out / capture.INDEX_FILENAME).read_text().splitlines()]
    for entry in index:
        number = int(entry["event_id"].rsplit("-", 1)[1])
        split, label, name = entry["file"].split("/")
        assert label == CLASSES[number % 2] and entry["probability"] == pytest.approx(0.8)
        assert name == f"{entry['event_id']}{'.jpg' if number % 2 else '.png'}"
        assert split == capture.split_of(entry["event_id"], 40)
        assert (out / entry["file"]).read_bytes() == _image("JPEG" if number % 2 else "PNG", number)
    assert {e["file"].split("/")[0] for e in index} == {"train", "valid", "test"}
    assert json.loads((out / "manifest.json").read_text())["version"] == "captured-2026-12-01"
    # The upload's own checks, as `imgclf aws upload` runs them before sending a byte.
    checked = upload.check_dataset(out, "captured", None, None)
    assert (checked.class_count, checked.image_count, checked.skipped_count) == (2, 80, 0)
    assert "80 images written" in capsys.readouterr().out


def test_running_again_adds_nothing_and_keeps_the_relabeling(tmp_path: Path, capsys) -> None:
    captures = _capture_folder(tmp_path / "captures", per_class=3)
    out = tmp_path / "captured"
    assert capture.run([captures], out, version=None, stdout=io.StringIO()) == ExitCode.OK
    [moved] = [p for p in out.rglob("*.png")][:1]
    relabeled = moved.parent.parent / "003.Akita" / moved.name  # a person fixed the label
    relabeled.parent.mkdir()
    moved.rename(relabeled)
    before = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    report = io.StringIO()
    assert capture.run([captures], out, version=None, stdout=report) == ExitCode.OK
    # Same eventIds, same places: every image already there, except the moved one, written back where the
    # model put it (the relabeled copy stays; the person deletes the duplicate or not).
    assert "1 images written" in report.getvalue() and "5 already there" in report.getvalue()
    after = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert set(before) <= set(after) and relabeled.exists()


def test_bad_records_are_skipped_and_named(tmp_path: Path) -> None:
    good = _record(_image("JPEG", 1), contract.JPEG_CONTENT_TYPE, _answer(0), event_id="good-1")
    lines = [
        good,
        "not json at all",
        json.dumps({"hello": "world"}),
        _record(b"6,148,72,35", "text/csv", _answer(0), event_id="csv-1"),
        _record(_image("PNG", 2), contract.PNG_CONTENT_TYPE, json.dumps({"error": "x"}), event_id="noanswer"),
        _record(_image("PNG", 3), contract.PNG_CONTENT_TYPE, None, event_id="inputonly"),
        _record(_image("PNG", 4), contract.PNG_CONTENT_TYPE, _answer(0), event_id="../escape"),
        _record(_image("PNG", 5), contract.PNG_CONTENT_TYPE,
                json.dumps({"predictions": [{"label": "../x", "probability": 1.0}]}), event_id="badlabel"),
    ]
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(lines) + "\n")
    report = io.StringIO()
    out = tmp_path / "out"
    assert capture.run([path], out, version=None, holdout_percent=0, stdout=report) == ExitCode.OK
    text = report.getvalue()
    assert f"{path}:2: not JSON" in text
    assert f"{path}:3: no captureData" in text
    assert f"{path}:4: the captured request (text/csv) is not a JPEG or PNG image" in text
    assert f"{path}:5: the captured answer has no predictions" in text
    assert f"{path}:7: eventMetadata.eventId '../escape'" in text
    assert f"{path}:8: label '../x' cannot be a class folder name" in text
    # An input-only capture (CaptureOptions without Output) is kept, to label from scratch.
    assert (out / "train" / CLASSES[0] / "good-1.jpg").is_file()
    assert (out / "train" / capture.UNLABELED / "inputonly.png").is_file()
    assert not list(tmp_path.glob("x*")) and not (tmp_path / "escape.png").exists()


def test_nothing_usable_is_a_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text("garbage\n")
    assert main(["aws", "capture-to-dataset", str(path), "--out", str(tmp_path / "out")]) == ExitCode.BAD_INPUT
    assert main(["aws", "capture-to-dataset", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == (
        ExitCode.BAD_INPUT
    )
