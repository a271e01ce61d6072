"""training/inference.py driven exactly as SageMaker's inference toolkit drives it, and the runtime choice.

The toolkit's Transformer imports the user module named by SAGEMAKER_PROGRAM from the model's code/
directory, calls model_fn once, then input_fn -> predict_fn -> output_fn per request, passing the
context when the function accepts it, and answers a BaseInferenceToolkitError with its status code
(anything else: 500). The context below implements the model server's (MMS/TorchServe) context API the
Transformer uses: system_properties, request_processor[0].get_request_properties(),
set_response_status, set_response_content_type.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sagemaker_inference.transformer import Transformer

from imgclf import contract, runtimes, serving


class _RequestProcessor:
    def __init__(self) -> None:
        self.headers: dict[str, str] = {}

    def get_request_properties(self) -> dict[str, str]:
        return self.headers


class ModelServerContext:
    """The model server's per-worker context object, reused for every request (as MMS/TorchServe do)."""

    def __init__(self, model_dir: Path) -> None:
        self.system_properties = {"model_dir": str(model_dir), "gpu_id": None}
        self.request_processor = [_RequestProcessor()]
        self.status: tuple[int, str] | None = None
        self.response_content_type: str | None = None

    def set_response_status(self, code: int, phrase: str) -> None:
        self.status = (code, phrase)

    def set_response_content_type(self, index: int, content_type: str) -> None:
        self.response_content_type = content_type


class Toolkit:
    """One model-server worker running the SageMaker toolkit's Transformer on our inference.py."""

    def __init__(self, model_dir: Path) -> None:
        self.context = ModelServerContext(model_dir)
        self.transformer = Transformer()

    def invoke(self, body: bytes, content_type: str | None, accept: str | None = None,
               custom_attributes: str | None = None) -> tuple[int, Any]:
        headers = {"Content-Type": content_type} if content_type else {}
        if accept:
            headers["Accept"] = accept
        if custom_attributes:
            headers["X-Amzn-SageMaker-Custom-Attributes"] = custom_attributes
        self.context.request_processor[0].headers = headers
        self.context.status = None
        response = self.transformer.transform([{"body": body}], self.context)
        status = self.context.status[0] if self.context.status else 200
        return status, response[0]


@pytest.fixture()
def toolkit(trained_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Toolkit:
    # What SageMaker's PyTorch container does: code/ on sys.path, SAGEMAKER_PROGRAM names the module.
    monkeypatch.syspath_prepend(str(trained_model_dir / "code"))
    monkeypatch.setenv("SAGEMAKER_PROGRAM", "inference.py")
    monkeypatch.delitem(sys.modules, "inference", raising=False)
    yield Toolkit(trained_model_dir)
    sys.modules.pop("inference", None)


def test_the_artifact_carries_the_handler(trained_model_dir: Path) -> None:
    code = trained_model_dir / "code"
    assert (code / "inference.py").read_text() == (Path(__file__).parents[2] / "training" / "inference.py").read_text()
    assert (code / "imgclf" / "serving.py").is_file()


def test_toolkit_answers_like_our_server_code(toolkit: Toolkit, trained_model_dir: Path,
                                              jpeg_bytes: bytes, png_bytes: bytes) -> None:
    model = serving.load_model(trained_model_dir)
    for body, content_type in ((jpeg_bytes, "image/jpeg"), (png_bytes, "application/octet-stream")):
        status, answer = toolkit.invoke(body, content_type)
        assert status == 200 and toolkit.context.response_content_type == "application/json"
        assert answer == serving.invoke(model, body, content_type)[0]
        payload = json.loads(answer)
        metadata = json.loads((trained_model_dir / "metadata.json").read_text())
        assert len(payload["predictions"]) == min(contract.DEFAULT_TOP_K, metadata["num_classes"])
        assert payload["runtime"] == model.runtime_name
        probabilities = [p["probability"] for p in payload["predictions"]]
        assert probabilities == sorted(probabilities, reverse=True)
        for prediction in payload["predictions"]:
            assert prediction["label"] == metadata["class_names"][prediction["class_id"]]
    # The blue-dominated test image is class 2 for a model that learned anything in its one epoch;
    # the label comes from the metadata, not from a folder name.
    assert json.loads(toolkit.invoke(jpeg_bytes, "image/jpeg")[1])["predictions"][0]["label"] == "Blue_things"


def test_top_k_from_custom_attributes(toolkit: Toolkit, jpeg_bytes: bytes) -> None:
    status, answer = toolkit.invoke(jpeg_bytes, "image/jpeg", custom_attributes="trace=1,top_k=1")
    assert status == 200 and len(json.loads(answer)["predictions"]) == 1
    status, answer = toolkit.invoke(jpeg_bytes, "image/jpeg", custom_attributes="top_k=0")
    assert status == 400 and "top_k" in answer


def test_bad_requests_get_4xx_and_the_worker_keeps_answering(toolkit: Toolkit, jpeg_bytes: bytes) -> None:
    cases = [
        (b"", "image/jpeg", None, 400, "empty"),
        (jpeg_bytes[: len(jpeg_bytes) // 2], "image/jpeg", None, 400, "truncated"),
        (b"not an image at all", "application/x-image", None, 415, "not a JPEG or PNG"),
        # The toolkit decodes text/csv and application/json bodies to str before input_fn sees them
        # (binary bytes sent that way fail inside the toolkit itself, before our code: a 500 we cannot
        # shape; the inference Lambda only forwards image content types).
        (b"a,b,c", "text/csv", None, 415, "not supported"),
        (jpeg_bytes, "image/jpeg", "text/csv", 406, "application/json only"),
        (b"\xff\xd8\xff" + bytes(contract.MAX_IMAGE_BYTES), "image/jpeg", None, 413, "limit"),
    ]
    for body, content_type, accept, expected, fragment in cases:
        status, answer = toolkit.invoke(body, content_type, accept)
        assert status == expected, answer
        assert fragment in answer.splitlines()[0]
        ok_status, ok_answer = toolkit.invoke(jpeg_bytes, "image/jpeg")
        assert ok_status == 200 and json.loads(ok_answer)["predictions"]


# --------------------------------------------------------------------------------------------------
# The runtime choice.


def _metadata(model_dir: Path) -> dict[str, Any]:
    return json.loads((model_dir / "metadata.json").read_text())


def test_export_recorded_every_variant_honestly(trained_model_dir: Path) -> None:
    record = _metadata(trained_model_dir)["serving"]
    assert record["min_agreement"] == runtimes.MIN_TOP1_AGREEMENT
    assert record["validation_samples"] == 30  # 3 classes x 10 validation images
    assert set(record["variants"]) == set(runtimes.VARIANTS)
    for name, info in record["variants"].items():
        if "agreement" in info:
            assert info["eligible"] == (info["agreement"] >= runtimes.MIN_TOP1_AGREEMENT), name
        else:
            assert not info["eligible"] and info["skipped"]
    assert record["default"] == (runtimes.ranked_candidates(record) or [runtimes.TORCH])[0]
    # fp32 ONNX Runtime computes the same function as torch: it must be exported and agree.
    assert record["variants"]["onnxruntime-fp32"]["agreement"] >= runtimes.MIN_TOP1_AGREEMENT


def test_fp32_onnx_computes_what_torch_computes(trained_model_dir: Path) -> None:
    model = serving.load_model(trained_model_dir, runtime=runtimes.TORCH)
    rng = np.random.default_rng(3)
    size = model.transform.preprocessing.input_size
    batch = rng.normal(0, 1, size=(16, 3, size, size)).astype(np.float32)
    reference = model.runtime(batch)
    fp32 = runtimes.load_variant(runtimes.VARIANTS["onnxruntime-fp32"], trained_model_dir, threads=1)
    np.testing.assert_allclose(fp32(batch), reference, rtol=1e-3, atol=1e-3)


def test_auto_picks_the_fastest_eligible_variant(trained_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(runtimes.RUNTIME_ENV, raising=False)
    metadata = _metadata(trained_model_dir)
    model = serving.load_model(trained_model_dir, threads=1)
    assert model.runtime_name == metadata["serving"]["default"]
    # Make a different measured variant the fastest eligible one: auto follows the records.
    doctored = copy.deepcopy(metadata)
    for info in doctored["serving"]["variants"].values():
        info.update(eligible=True, agreement=1.0, latency_ms=50.0)
    doctored["serving"]["variants"]["openvino-fp32"]["latency_ms"] = 1.0
    runtime = runtimes.select_runtime(trained_model_dir, doctored, lambda: None, threads=1)
    assert runtime.name == "openvino-fp32"


def test_falls_back_to_fp32_torch_when_agreement_is_below_the_bar(trained_model_dir: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(runtimes.RUNTIME_ENV, raising=False)
    metadata = copy.deepcopy(_metadata(trained_model_dir))
    for info in metadata["serving"]["variants"].values():
        info.update(agreement=0.99, eligible=False, latency_ms=0.1)
    torch_model = serving.load_model(trained_model_dir, runtime=runtimes.TORCH).runtime.model
    runtime = runtimes.select_runtime(trained_model_dir, metadata, lambda: torch_model, threads=1)
    assert runtime.name == runtimes.TORCH
    # A record that claims eligibility with a sub-bar agreement is not trusted either.
    metadata["serving"]["variants"]["onnxruntime-fp32"].update(eligible=True, agreement=0.9)
    assert runtimes.select_runtime(trained_model_dir, metadata, lambda: torch_model, threads=1).name == "torch"
    # And asking for such a runtime by name is refused with the reason.
    with pytest.raises(runtimes.RuntimeUnavailableError, match="bar"):
        runtimes.select_runtime(trained_model_dir, metadata, lambda: torch_model, requested="onnxruntime-fp32")
    # No export at all (training ran with --no-export): torch.
    del metadata["serving"]
    assert runtimes.select_runtime(trained_model_dir, metadata, lambda: torch_model, threads=1).name == "torch"


def test_environment_variable_chooses(trained_model_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                      jpeg_bytes: bytes) -> None:
    monkeypatch.setenv(runtimes.RUNTIME_ENV, "torch")
    model = serving.load_model(trained_model_dir)
    assert model.runtime_name == "torch"
    assert json.loads(serving.invoke(model, jpeg_bytes, "image/jpeg")[0])["runtime"] == "torch"
    monkeypatch.setenv(runtimes.RUNTIME_ENV, "onnxruntime-fp32")
    assert serving.load_model(trained_model_dir).runtime_name == "onnxruntime-fp32"
    monkeypatch.setenv(runtimes.RUNTIME_ENV, "tensorrt")
    with pytest.raises(runtimes.RuntimeUnavailableError, match="not a runtime"):
        serving.load_model(trained_model_dir)


def test_missing_export_file_is_skipped(trained_model_dir: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(runtimes.RUNTIME_ENV, raising=False)
    for name in ("metadata.json", "model.pt"):
        (tmp_path / name).write_bytes((trained_model_dir / name).read_bytes())
    metadata = _metadata(tmp_path)
    for info in metadata["serving"]["variants"].values():
        info.update(eligible=True, agreement=1.0)
    (tmp_path / "metadata.json").write_text(json.dumps(metadata))
    # No ONNX files copied: every variant is unavailable, and torch serves.
    assert serving.load_model(tmp_path, threads=1).runtime_name == "torch"
