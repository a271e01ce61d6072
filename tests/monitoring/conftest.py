"""The monitoring tests import the pipeline layer's modules as the Lambda runtime finds them (/opt/python)."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LAYER = REPO / "functions" / "pipeline_layer"
if str(LAYER) not in sys.path:
    sys.path.insert(0, str(LAYER))
