"""`imgclf aws capture-to-dataset CAPTURES... --out DIR`: the endpoint's captured requests as a dataset to relabel.

With the stack's DataCapturePercentage above 0, SageMaker stores that share of the endpoint's requests and
answers in the data bucket, under data-capture/<endpoint>/<variant>/yyyy/mm/dd/hh/<file>.jsonl. Each line
is one request in AWS's capture format
(https://docs.aws.amazon.com/sagemaker/latest/dg/model-monitor-data-capture-endpoint.html, "View Captured
Data"):

    {"captureData": {"endpointInput":  {"observedContentType": "image/jpeg", "mode": "INPUT",
                                        "data": "<base64>", "encoding": "BASE64"},
                     "endpointOutput": {"observedContentType": "application/json", "mode": "OUTPUT",
                                        "data": "{\\"predictions\\": [...]}", "encoding": "JSON"}},
     "eventMetadata": {"eventId": "...", "inferenceTime": "2026-..."}, "eventVersion": "0"}

This command reads such files (downloaded with `aws s3 sync`; folders are searched for *.jsonl), decodes
each image and writes it in the dataset layout `imgclf aws upload` takes: DIR/<split>/<predicted label>/
<eventId>.jpg|png. The predicted label is only where a person starts relabeling: move each image to its
true class folder (or delete it), then upload DIR. The split is drawn from the eventId (stable: running the
command again, or on overlapping downloads, puts an image in the same place), `--holdout` percent of images
shared between valid and test. DIR may be a copy of the previous dataset: the images are added next to its
own, an existing file is never overwritten, its manifest.json (and overrides) is kept. DIR/capture-index.jsonl
lists what was written, with the model's answer, for review.

A line that is not a capture record, an input that is not a JPEG or PNG, or an answer without predictions
is skipped and reported with its file and line; nothing else is lost.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from imgclf import contract
from imgclf import manifest as manifests
from imgclf_cli.errors import CliError, ExitCode
from imgclf_cli.upload import manifest_body

log = logging.getLogger("imgclf.capture")

# The capture format's field values (AWS's example records; CaptureContentTypeHeader: types not listed as
# JSON or CSV are captured base64-encoded, which is how the pipeline captures images).
BASE64, JSON_ENCODING = "BASE64", "JSON"
UNLABELED = "unlabeled"  # the folder of images captured without an answer (CaptureOptions Input only)
INDEX_FILENAME = "capture-index.jsonl"
DEFAULT_HOLDOUT_PERCENT = 20
_EXTENSIONS = {contract.JPEG_CONTENT_TYPE: ".jpg", contract.PNG_CONTENT_TYPE: ".png"}
# A class folder name must stay one folder: no separators, not "." or "..", no control characters.
_UNSAFE_LABEL = re.compile(r"[/\\\x00-\x1f]|^\.{1,2}$")


class CaptureRecordError(ValueError):
    pass


@dataclass(frozen=True)
class CapturedImage:
    event_id: str
    inference_time: str
    image: bytes
    content_type: str  # sniffed from the bytes: image/jpeg or image/png
    label: str  # the model's top-1 label, or UNLABELED
    probability: float | None
    source: str  # file:line


@dataclass
class CaptureResult:
    written: Counter[str] = field(default_factory=Counter)  # split -> images written
    already_there: int = 0
    skipped: list[str] = field(default_factory=list)  # "file:line: why"


def _payload(section: Any, what: str) -> bytes:
    if not isinstance(section, dict) or "data" not in section:
        raise CaptureRecordError(f"no {what} data")
    data, encoding = section["data"], section.get("encoding")
    if not isinstance(data, str):
        raise CaptureRecordError(f"{what} data is not a string")
    if encoding == BASE64:
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as error:
            raise CaptureRecordError(f"{what} data is not valid base64: {error}") from error
    return data.encode()


def _top_prediction(output: Any) -> tuple[str, float | None]:
    """The top-1 (label, probability) of a captured answer (serving's JSON answer, interface 5)."""
    try:
        answer = json.loads(_payload(output, "endpointOutput"))
    except ValueError as error:
        raise CaptureRecordError(f"the captured answer is not JSON: {error}") from error
    predictions = answer.get("predictions") if isinstance(answer, dict) else None
    if not predictions or not isinstance(predictions[0], dict) or not isinstance(predictions[0].get("label"), str):
        raise CaptureRecordError("the captured answer has no predictions with a label")
    best = max(predictions, key=lambda p: p.get("probability", 0.0))
    label = best["label"]
    if not label or _UNSAFE_LABEL.search(label):
        raise CaptureRecordError(f"label {label!r} cannot be a class folder name")
    probability = best.get("probability")
    return label, float(probability) if isinstance(probability, int | float) else None


def parse_record(line: str, source: str) -> CapturedImage:
    """One capture line -> the image it carries and the label the model gave it; CaptureRecordError why not."""
    try:
        record = json.loads(line)
    except ValueError as error:
        raise CaptureRecordError(f"not JSON: {error}") from error
    capture = record.get("captureData") if isinstance(record, dict) else None
    if not isinstance(capture, dict):
        raise CaptureRecordError("no captureData: not a SageMaker data capture record")
    metadata = record.get("eventMetadata") or {}
    event_id = metadata.get("eventId")
    if not isinstance(event_id, str) or not re.fullmatch(r"[A-Za-z0-9._-]+", event_id):
        raise CaptureRecordError(f"eventMetadata.eventId {event_id!r} is missing or not file-name safe")
    request = capture.get("endpointInput")
    image = _payload(request, "endpointInput")
    content_type = contract.sniff_image_type(image)
    if content_type is None:
        observed = request.get("observedContentType") if isinstance(request, dict) else None
        raise CaptureRecordError(f"the captured request ({observed}) is not a JPEG or PNG image")
    output = capture.get("endpointOutput")
    label, probability = _top_prediction(output) if output else (UNLABELED, None)
    return CapturedImage(event_id, str(metadata.get("inferenceTime", "")), image, content_type, label,
                         probability, source)


def capture_files(paths: Iterable[Path]) -> list[Path]:
    """The .jsonl files among `paths` (folders searched recursively), in name order."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*.jsonl") if p.is_file()))
        elif path.is_file():
            found.append(path)
        else:
            raise CliError(f"{path} does not exist", ExitCode.BAD_INPUT)
    return found


def read_captures(files: Iterable[Path], skipped: list[str]) -> Iterator[CapturedImage]:
    for path in files:
        with path.open(encoding="utf-8", errors="replace") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                source = f"{path}:{number}"
                try:
                    yield parse_record(line, source)
                except CaptureRecordError as error:
                    skipped.append(f"{source}: {error}")


def split_of(event_id: str, holdout_percent: int) -> str:
    """train, valid or test, drawn from the eventId's hash: the same image always lands in the same split;
    holdout_percent of them go to valid and test, half each."""
    bucket = int.from_bytes(hashlib.sha256(event_id.encode()).digest()[:8], "big") % 10_000 / 100
    if bucket < holdout_percent / 2:
        return "valid"
    if bucket < holdout_percent:
        return "test"
    return "train"


def split_folders(out: Path) -> dict[str, str]:
    """train/valid/test -> folder under DIR: DIR/manifest.json's `splits` when DIR has one, else the same names."""
    if not (out / manifests.MANIFEST_FILENAME).is_file():
        return {s: s for s in manifests.SPLITS}
    try:
        return manifests.parse_manifest(manifest_body(out, None), out.name).splits
    except manifests.ManifestError as error:
        raise CliError(f"{out / manifests.MANIFEST_FILENAME}: {error}", ExitCode.BAD_INPUT) from error


def write_dataset(images: Iterable[CapturedImage], out: Path, holdout_percent: int, result: CaptureResult,
                  index: IO[str]) -> None:
    folders = split_folders(out)
    for captured in images:
        split = split_of(captured.event_id, holdout_percent)
        target = out / folders[split] / captured.label / f"{captured.event_id}{_EXTENSIONS[captured.content_type]}"
        if target.exists():
            if target.read_bytes() != captured.image:
                result.skipped.append(f"{captured.source}: {target} exists with other content; kept as it is")
            else:
                result.already_there += 1
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(captured.image)
        result.written[split] += 1
        index.write(json.dumps({
            "file": target.relative_to(out).as_posix(), "event_id": captured.event_id,
            "inference_time": captured.inference_time, "predicted_label": captured.label,
            "probability": captured.probability, "source": captured.source,
        }) + "\n")


def run(paths: list[Path], out: Path, *, version: str | None, holdout_percent: int = DEFAULT_HOLDOUT_PERCENT,
        stdout: IO[str]) -> ExitCode:
    if not 0 <= holdout_percent < 100:
        raise CliError(f"--holdout must be in 0..99, got {holdout_percent}", ExitCode.BAD_INPUT)
    files = capture_files(paths)
    if not files:
        raise CliError(f"no .jsonl capture files in {', '.join(map(str, paths))}", ExitCode.BAD_INPUT)
    if out.exists() and not out.is_dir():
        raise CliError(f"{out} is not a folder", ExitCode.BAD_INPUT)
    out.mkdir(parents=True, exist_ok=True)
    result = CaptureResult()
    with (out / INDEX_FILENAME).open("a", encoding="utf-8") as index:
        write_dataset(read_captures(files, result.skipped), out, holdout_percent, result, index)
    manifest_path = out / manifests.MANIFEST_FILENAME
    if version is not None or not manifest_path.exists():
        manifest_path.write_bytes(manifest_body(out, version))
    for problem in result.skipped:
        print(f"skipped {problem}", file=stdout)
    total = sum(result.written.values())
    print(f"{total} images written to {out} ({', '.join(f'{s} {result.written[s]}' for s in manifests.SPLITS)}), "
          f"{result.already_there} already there, {len(result.skipped)} skipped, from {len(files)} capture files",
          file=stdout)
    if total:
        print(f"next: move each image under {out}/<split>/ to its true class folder, then "
              f"`imgclf aws upload {out} --stack <stack>`", file=stdout)
    if total == 0 and result.already_there == 0:
        raise CliError("no captured image could be used (see the skipped lines above)", ExitCode.BAD_INPUT)
    return ExitCode.OK
