"""What the `imgclf aws ...` tests share: the pipeline tests' world (tests/pipeline/pipeline_world.py),
the stack's name and outputs in that world, and a small dataset in the dogImages layout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pipeline_world as pw
from PIL import Image

REPO = Path(__file__).resolve().parents[2]

STACK = "imgclf"
FUNCTION_URL = "https://abcdefghijklmnopqrstuvwxyz012345.lambda-url.us-east-1.on.aws/"


def stack_outputs(world: Any) -> dict[str, str]:
    """The values template.yaml's Outputs take in this world (keys: the template's own)."""
    values = {"DataBucketName": pw.BUCKET, "StateMachineArn": world.state_machine_arn,
              "InferenceUrl": FUNCTION_URL, "EndpointName": pw.ENDPOINT}
    template_outputs = set(pw.template()["Outputs"])
    assert set(values) <= template_outputs, sorted(set(values) - template_outputs)
    return values


def write_dataset(root: Path, classes: tuple[str, ...] = ("001.Affenpinscher", "002.Afghan_hound"),
                  per_class: int = 2, splits: tuple[str, ...] = ("train", "valid", "test")) -> Path:
    """A small dataset in the dogImages layout, with real JPEGs."""
    rng = np.random.default_rng(0)
    for split in splits:
        for class_index, folder in enumerate(classes):
            target = root / split / folder
            target.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = rng.integers(0, 80, size=(24, 32, 3))
                pixels[..., class_index] += 150
                Image.fromarray(pixels.astype(np.uint8)).save(target / f"{folder.split('.')[1]}_{i}.jpg", "JPEG")
    return root
