"""The post-deploy smoke test: the shared facts and the pure check, used by the pipeline's SmokeTest Lambda
(through the layer) and by local mode alike, so that both judge an endpoint by the same code.

At the end of training, imgclf.smoke_sample records the model's own answers for a few test images into
SAMPLE_FILE at the root of the model directory (so inside model.tar.gz, and with the model wherever it is
deployed from: a model package version names the same ModelDataUrl). After deployment the images go
through the real InvokeEndpoint path, with the content type a client sends (contract) and top_k in
CustomAttributes, and `check` compares the answers with the recording.

Tolerance (what the served runtime may change). The endpoint may serve eager torch or an exported variant
(imgclf.runtimes: fp32, bf16 or int8), chosen on the endpoint instance. The recording holds the answers of
every runtime the training machine could run, so usually the served runtime's own recording is the
reference; then only kernel scheduling (threads, batch of one) and the answer's rounding to 6 decimals
differ, and FP32_TOLERANCE applies. A runtime the training machine could not run (bf16 needs a CPU with
native bf16) is compared with eager fp32 torch, with its precision's tolerance:
- bf16: 8 significant bits, a relative rounding of 2**-8 = 0.4 % on every activation; over a network the
  logits move by about 1-2 %, and a probability by at most 0.05 in practice;
- int8: static QDQ quantisation moves logits by a few percent (the export keeps the head in fp32 for this
  reason, imgclf.export); 0.08 covers it.
These are absolute bounds on each probability in the answer. Only variants whose top-1 agreement with torch
reached runtimes.MIN_TOP1_AGREEMENT (99.5 %) on the validation split ever serve; the sample's images are
chosen with a top-1 margin (p1 - p2) of at least MIN_TOP1_MARGIN = 2 x the largest tolerance, so no runtime
within tolerance can change their top-1 label: on them a different top-1 is a wrong model, never noise.
An image with a smaller margin (a model too unsure to offer enough) is checked on probabilities only.

Pure Python, no third-party imports: the Lambdas import it without torch or numpy.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from imgclf import contract, tar_stream

SAMPLE_FILE = "smoke-sample.json"  # at the root of the model directory (and of model.tar.gz)
SCHEMA_VERSION = 1
SAMPLE_SIZE = 4
TOP_K = 3
REFERENCE_RUNTIME = "torch"
FP32_TOLERANCE = 0.002
PRECISION_TOLERANCE: dict[str, float] = {"fp32": FP32_TOLERANCE, "bf16": 0.05, "int8": 0.08}
MIN_TOP1_MARGIN = 2 * max(PRECISION_TOLERANCE.values())
# Each image stays far under every InvokeEndpoint payload limit (real-time 6 MB, serverless 4 MB:
# https://docs.aws.amazon.com/sagemaker/latest/dg/serverless-endpoints.html) and keeps the sample small.
MAX_SAMPLE_IMAGE_BYTES = 1024 * 1024


class SmokeSampleError(ValueError):
    """The model artifact has no usable smoke sample."""


@dataclass
class SmokeReport:
    passed: bool
    runtime: str  # what the endpoint says served the answers
    reference: str  # whose recording they were compared with
    tolerance: float
    images: int
    mismatches: list[str] = field(default_factory=list)

    def summary(self) -> str:
        head = (f"{self.images} image(s) answered by runtime {self.runtime}, compared with the recording of "
                f"{self.reference} (tolerance {self.tolerance:g} per probability)")
        if self.passed:
            return f"smoke test passed: {head}"
        return f"smoke test failed: {head}: " + "; ".join(self.mismatches)

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "runtime": self.runtime, "reference": self.reference,
                "tolerance": self.tolerance, "images": self.images, "mismatches": self.mismatches,
                "summary": self.summary()}


def image_bytes(image: Mapping[str, Any]) -> bytes:
    return base64.b64decode(image["image_base64"])


def _top(answer: Mapping[str, Any]) -> list[tuple[str, float]]:
    return [(str(p["label"]), float(p["probability"])) for p in answer.get("predictions") or []]


def _reference(sample: Mapping[str, Any], runtime: str) -> tuple[str, float]:
    recordings = sample["recordings"]
    if runtime in recordings:
        return runtime, FP32_TOLERANCE
    precision = sample.get("precisions", {}).get(runtime)
    if precision is None:
        raise SmokeSampleError(f"the endpoint answered with runtime {runtime!r}, which this model never exported")
    return REFERENCE_RUNTIME, PRECISION_TOLERANCE[precision]


def compare(image: str, recorded: Mapping[str, Any], served: Mapping[str, Any], tolerance: float) -> list[str]:
    """What differs between one recorded answer and the served one (empty: they agree)."""
    want, got = _top(recorded), _top(served)
    if not got:
        return [f"{image}: the answer has no predictions ({json.dumps(served)[:200]})"]
    problems = []
    margin = want[0][1] - (want[1][1] if len(want) > 1 else 0.0)
    if got[0][0] != want[0][0] and margin >= 2 * tolerance:
        problems.append(f"{image}: top-1 {got[0][0]!r} ({got[0][1]:.4f}), recorded {want[0][0]!r} ({want[0][1]:.4f})")
    served_probability = dict(got)
    floor = got[-1][1]  # a label below the served top-k has at most the k-th probability
    for label, probability in want:
        if label in served_probability:
            if abs(served_probability[label] - probability) > tolerance:
                problems.append(f"{image}: P({label!r}) {served_probability[label]:.4f}, recorded {probability:.4f}")
        elif probability - floor > tolerance:
            problems.append(f"{image}: {label!r} (recorded {probability:.4f}) missing from the served top-{len(got)}")
    return problems


def check(sample: Mapping[str, Any], answers: Sequence[Mapping[str, Any]]) -> SmokeReport:
    """The served answers (one per sample image, in order) against the recording."""
    images = sample["images"]
    if len(answers) != len(images):
        raise ValueError(f"{len(answers)} answer(s) for {len(images)} image(s)")
    runtimes = {str(a.get("runtime")) for a in answers}
    runtime = sorted(runtimes)[0] if len(runtimes) == 1 else ",".join(sorted(runtimes))
    mismatches: list[str] = []
    tolerances = []
    references = set()
    for index, (image, answer) in enumerate(zip(images, answers, strict=True)):
        reference, tolerance = _reference(sample, str(answer.get("runtime")))
        references.add(reference)
        tolerances.append(tolerance)
        recorded = sample["recordings"][reference]["answers"][index]
        mismatches += compare(image["name"], recorded, answer, tolerance)
    return SmokeReport(passed=not mismatches, runtime=runtime, reference=",".join(sorted(references)),
                       tolerance=max(tolerances), images=len(images), mismatches=mismatches)


Invoke = Callable[[bytes, str], Mapping[str, Any]]


def endpoint_invoker(runtime_client: Any, endpoint_name: str, top_k: int = TOP_K) -> Invoke:
    """InvokeEndpoint as a client calls it (functions/inference): the image's content type, JSON back,
    top_k in CustomAttributes. `runtime_client` is a boto3 sagemaker-runtime client (pointed at local
    mode's server there)."""
    def invoke(body: bytes, content_type: str) -> Mapping[str, Any]:
        response = runtime_client.invoke_endpoint(
            EndpointName=endpoint_name, Body=body, ContentType=content_type,
            Accept=contract.JSON_CONTENT_TYPE, CustomAttributes=contract.top_k_custom_attributes(top_k))
        return json.loads(response["Body"].read())
    return invoke


def run(sample: Mapping[str, Any], invoke: Invoke) -> SmokeReport:
    """Send every sample image through `invoke` and check the answers."""
    answers = [invoke(image_bytes(image), image["content_type"]) for image in sample["images"]]
    return check(sample, answers)


def validate_sample(sample: Any) -> dict[str, Any]:
    if not isinstance(sample, dict) or sample.get("schema_version") != SCHEMA_VERSION:
        raise SmokeSampleError(f"{SAMPLE_FILE}: not a schema-{SCHEMA_VERSION} smoke sample")
    if not sample.get("images") or REFERENCE_RUNTIME not in sample.get("recordings", {}):
        raise SmokeSampleError(f"{SAMPLE_FILE}: no images or no {REFERENCE_RUNTIME} recording")
    return sample


def read_sample_from_tar(fileobj: IO[bytes]) -> dict[str, Any]:
    """The sample inside a model.tar.gz, read as a stream (an S3 body): stops at the file, never extracts
    anything else. SageMaker tars the model directory, so the file sits at the root (maybe as ./name)."""
    data = tar_stream.read_member(fileobj, SAMPLE_FILE)
    if data is not None:
        return validate_sample(json.loads(data))
    raise SmokeSampleError(f"the model artifact has no {SAMPLE_FILE}: trained before the smoke test existed?")
