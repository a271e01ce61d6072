"""Records the trained model's own answers for a few test images: the post-deploy smoke test's reference.

Called once at the end of the final training (imgclf.outputs, rank 0), after the model directory is complete:

    smoke_sample.record(model_dir, test_samples, root)

Loads the model directory exactly as the endpoint does (imgclf.serving.load_model) with every runtime this
machine can run (eager torch, and each exported variant that is eligible to serve), sends the raw image
bytes through serving.invoke with the content type a client sends (contract.sniff_image_type) and the
smoke test's top_k, and writes smoke_check.SAMPLE_FILE into the model directory (so into model.tar.gz).

The choice of images is deterministic: the test split's images by class in turn (class id, then path),
the first SAMPLE_SIZE whose torch top-1 margin reaches smoke_check.MIN_TOP1_MARGIN (see smoke_check for
why), among at most MAX_CANDIDATES; when too few reach it, the largest margins fill the sample.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from imgclf import contract, runtimes, serving, smoke_check

LOGGER = logging.getLogger(__name__)

MAX_CANDIDATES = 64


def candidates(samples: Sequence[tuple[Path, int]], limit: int = MAX_CANDIDATES) -> list[Path]:
    """The test images in the order they are tried: one per class in turn, each class's in path order."""
    by_class: dict[int, list[Path]] = {}
    for path, label in sorted(samples, key=lambda s: (s[1], str(s[0]))):
        by_class.setdefault(label, []).append(path)
    ordered: list[Path] = []
    depth = 0
    while len(ordered) < limit and any(depth < len(paths) for paths in by_class.values()):
        ordered += [paths[depth] for _, paths in sorted(by_class.items()) if depth < len(paths)]
        depth += 1
    return ordered[:limit]


def _answer(model: serving.ServedModel, body: bytes, content_type: str) -> dict[str, Any]:
    text, _ = serving.invoke(model, body, content_type, contract.JSON_CONTENT_TYPE,
                             custom_attributes=contract.top_k_custom_attributes(smoke_check.TOP_K))
    return json.loads(text)


def _margin(answer: dict[str, Any]) -> float:
    top = [p["probability"] for p in answer["predictions"]]
    return top[0] - (top[1] if len(top) > 1 else 0.0)


def _serving_runtimes(model_dir: Path, metadata: dict[str, Any]) -> list[str]:
    """The exported variants that may serve this model (eligible) and that this machine can run."""
    return [name for name in runtimes.ranked_candidates(metadata.get("serving"))
            if runtimes.unavailable_reason(runtimes.VARIANTS[name], model_dir) is None]


def record(model_dir: Path, samples: Sequence[tuple[Path, int]], root: Path | None = None) -> dict[str, Any]:
    """Choose the sample, record every runnable runtime's answers, write SAMPLE_FILE; returns the sample."""
    model_dir = Path(model_dir)
    reference = serving.load_model(model_dir, runtime=runtimes.TORCH)
    chosen: list[tuple[Path, bytes, str, dict[str, Any]]] = []
    spare: list[tuple[float, int, Path, bytes, str, dict[str, Any]]] = []
    for order, path in enumerate(candidates(samples)):
        body = path.read_bytes()
        content_type = contract.sniff_image_type(body)
        if content_type is None or len(body) > smoke_check.MAX_SAMPLE_IMAGE_BYTES:
            continue
        answer = _answer(reference, body, content_type)
        if _margin(answer) >= smoke_check.MIN_TOP1_MARGIN:
            chosen.append((path, body, content_type, answer))
            if len(chosen) == smoke_check.SAMPLE_SIZE:
                break
        else:
            spare.append((-_margin(answer), order, path, body, content_type, answer))
    for _, _, path, body, content_type, answer in sorted(spare, key=lambda s: s[:2]):
        if len(chosen) == smoke_check.SAMPLE_SIZE:
            break
        chosen.append((path, body, content_type, answer))
    if not chosen:
        raise smoke_check.SmokeSampleError("no test image could be sent as JPEG or PNG for the smoke sample")

    def name(path: Path) -> str:
        return str(path.relative_to(root)) if root is not None and path.is_relative_to(root) else path.name

    recordings = {runtimes.TORCH: {"precision": "fp32", "answers": [c[3] for c in chosen]}}
    for runtime in _serving_runtimes(model_dir, reference.metadata):
        served = serving.load_model(model_dir, runtime=runtime)
        recordings[runtime] = {"precision": runtimes.VARIANTS[runtime].precision,
                               "answers": [_answer(served, body, ct) for _, body, ct, _ in chosen]}
    sample = {
        "schema_version": smoke_check.SCHEMA_VERSION,
        "top_k": smoke_check.TOP_K,
        "min_top1_margin": smoke_check.MIN_TOP1_MARGIN,
        "images": [{"name": name(path), "content_type": ct, "image_base64": base64.b64encode(body).decode()}
                   for path, body, ct, _ in chosen],
        "precisions": {runtimes.TORCH: "fp32", **{n: v.precision for n, v in runtimes.VARIANTS.items()}},
        "recordings": recordings,
    }
    (model_dir / smoke_check.SAMPLE_FILE).write_text(json.dumps(sample))
    LOGGER.info("smoke sample: %d test image(s), answers recorded for %s", len(chosen), ", ".join(recordings))
    return sample
