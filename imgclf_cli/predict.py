"""`imgclf predict IMAGE...`: send images to a classifier and print its top-k answers.

The request is the inference Function URL's (`POST /?top_k=K` with the image bytes), which local mode's
endpoint answers too (its `POST /`), so one code path serves `--url`, `--stack` (the stack's InferenceUrl
output) and `--local` (the endpoint `make local` left running, from <runs>/endpoint.json). The server
decides what it accepts: the bytes go as they are, with the type sniffed as the Lambda sniffs it.

The standard library's urllib makes the requests: one blocking POST per image needs no HTTP library.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from imgclf import contract
from imgclf_cli.errors import CliError, ExitCode

DEFAULT_TIMEOUT_S = 30.0


@dataclass
class Answer:
    """One image's outcome: the predictions (status 200) or the server's refusal."""

    image: str
    status: int
    latency_ms: float
    predictions: list[dict[str, Any]] = field(default_factory=list)
    runtime: str | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"image": self.image, "status": self.status, "latency_ms": self.latency_ms}
        if self.error is None:
            out.update(predictions=self.predictions, runtime=self.runtime)
        else:
            out["error"] = self.error
        return out


def request_url(base_url: str, top_k: int) -> str:
    """`<base>/?top_k=K`: the page's and the Function URL's route, whatever path the base URL ends in."""
    parts = urllib.parse.urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise CliError(f"{base_url!r} is not an http(s) URL", ExitCode.BAD_INPUT)
    query = urllib.parse.urlencode({contract.TOP_K_ATTRIBUTE: contract.parse_top_k(top_k)})
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path or "/", query, ""))


def _refusal(body: bytes) -> str:
    """The server's words: the Lambda's {"error": code, "message": text}, or the local {"error": text}."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        return body[:200].decode("utf-8", "replace").strip() or "no details"
    if isinstance(document, dict):
        for key in ("message", "error", "Message"):
            if isinstance(document.get(key), str):
                return document[key]
    return "no details"


def predict_one(url: str, image: Path, timeout: float = DEFAULT_TIMEOUT_S,
                sign: Any | None = None) -> Answer:
    """POST one image to `url` (from request_url). Raises CliError(SERVICE_ERROR) when nothing answers."""
    data = image.read_bytes()
    headers = {"Content-Type": contract.sniff_image_type(data) or "application/octet-stream",
               "Accept": contract.JSON_CONTENT_TYPE}
    if sign is not None:
        headers = sign(url, data, headers)
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read()
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise CliError(f"{url} cannot be reached ({reason}): is the endpoint running?",
                       ExitCode.SERVICE_ERROR) from error
    latency_ms = round((time.perf_counter() - started) * 1e3, 1)
    if status != 200:
        return Answer(str(image), status, latency_ms, error=_refusal(body))
    try:
        document = json.loads(body)
        predictions = document["predictions"]
    except (UnicodeDecodeError, ValueError, KeyError, TypeError):
        return Answer(str(image), 502, latency_ms, error="the answer is not the classifier's JSON")
    runtime = document.get("runtime")
    return Answer(str(image), 200, latency_ms, predictions=list(predictions),
                  runtime=runtime if isinstance(runtime, str) else None)


def print_table(answers: list[Answer], out: IO[str]) -> None:
    name_width = max([len(Path(a.image).name) for a in answers] + [5])
    label_width = max([len(str(p.get("label"))) for a in answers for p in a.predictions] + [5])
    out.write(f"{'IMAGE':<{name_width}}  RANK  {'LABEL':<{label_width}}  PROBABILITY\n")
    for answer in answers:
        name = Path(answer.image).name
        if answer.error is not None:
            out.write(f"{name:<{name_width}}  refused ({answer.status}): {answer.error}\n")
            continue
        for rank, prediction in enumerate(answer.predictions, start=1):
            shown = name if rank == 1 else ""
            out.write(f"{shown:<{name_width}}  {rank:>4}  {prediction.get('label')!s:<{label_width}}  "
                      f"{float(prediction.get('probability', 0.0)):>11.4f}\n")
        out.write(f"{'':<{name_width}}  runtime {answer.runtime or 'unknown'}, {answer.latency_ms:.0f} ms\n")


def run(images: list[Path], base_url: str, *, top_k: int, as_json: bool, timeout: float = DEFAULT_TIMEOUT_S,
        sign: Any | None = None, out: IO[str] | None = None) -> ExitCode:
    out = out or sys.stdout
    missing = [str(path) for path in images if not path.is_file()]
    if missing:
        raise CliError(f"no such image file(s): {', '.join(missing)}", ExitCode.BAD_INPUT)
    try:
        url = request_url(base_url, top_k)
    except ValueError as error:  # top_k out of range
        raise CliError(str(error), ExitCode.BAD_INPUT) from error
    answers = [predict_one(url, path, timeout, sign) for path in images]
    if as_json:
        json.dump([answer.as_dict() for answer in answers], out, indent=2)
        out.write("\n")
    else:
        print_table(answers, out)
    return ExitCode.OK if all(answer.error is None for answer in answers) else ExitCode.FAILED


def sigv4_signer(session: Any) -> Any:
    """Sign Function URL requests as AuthType AWS_IAM requires (SigV4, service `lambda`,
    https://docs.aws.amazon.com/lambda/latest/dg/urls-auth.html), with the session's credentials."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    credentials = session.get_credentials()
    if credentials is None:
        raise CliError("--sign needs AWS credentials (none found)", ExitCode.SERVICE_ERROR)

    def sign(url: str, data: bytes, headers: dict[str, str]) -> dict[str, str]:
        host = urllib.parse.urlsplit(url).hostname or ""
        # <url-id>.lambda-url.<region>.on.aws: the region is in the host name.
        labels = host.split(".")
        region = labels[2] if len(labels) > 3 and labels[1] == "lambda-url" else session.region_name
        request = AWSRequest(method="POST", url=url, data=data, headers=headers)
        SigV4Auth(credentials.get_frozen_credentials(), "lambda", region or "us-east-1").add_auth(request)
        return dict(request.headers.items())

    return sign
