"""Regenerate mlpipeline/image_uris.json with the sagemaker SDK (`make image-uris`).

Why a generated table instead of the SDK at run time: the SDK (v3, with its dependencies) is ~1 GB
installed and takes ~2 s to import, far over a Lambda layer's 250 MB limit and a cold start we do not
want to pay for one string. The SDK's own resolver (sagemaker.core.image_uris.retrieve) is still the
only source of the URIs: this script asks it for every region, framework version, scope (training,
inference) and processor (cpu, gpu), plus the Debugger rule evaluator image, and writes the answers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUTPUT = Path(__file__).parent / "mlpipeline" / "image_uris.json"
# The framework versions offered to the stack (FrameworkVersion parameter); each has both scopes.
FRAMEWORK_VERSIONS = ("2.3", "2.4", "2.5", "2.6")
INSTANCE_BY_PROCESSOR = {"cpu": "ml.m5.xlarge", "gpu": "ml.g4dn.xlarge"}


def main() -> int:
    from sagemaker.core import image_uris  # the sagemaker SDK, v3

    config = image_uris.config_for_framework("pytorch")
    debugger_regions = sorted(image_uris.config_for_framework("debugger")["versions"]["latest"]["registries"])
    table: dict = {"pytorch": {}, "debugger": {}}
    for region in debugger_regions:
        table["debugger"][region] = image_uris.retrieve("debugger", region=region)
    for scope in ("training", "inference"):
        for version in FRAMEWORK_VERSIONS:
            full = config[scope]["version_aliases"].get(version, version)
            spec = config[scope]["versions"][full]
            for py_version in spec["py_versions"]:
                for processor, instance_type in INSTANCE_BY_PROCESSOR.items():
                    uris = {}
                    for region in sorted(spec["registries"]):
                        try:
                            uris[region] = image_uris.retrieve(
                                "pytorch",
                                region=region,
                                version=version,
                                py_version=py_version,
                                instance_type=instance_type,
                                image_scope=scope,
                            )
                        except ValueError:
                            continue  # the SDK knows no such image in this region
                    key = f"{scope}/{version}/{py_version}/{processor}"
                    table["pytorch"][key] = uris
    OUTPUT.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUTPUT} ({len(table['pytorch'])} image sets, {len(table['debugger'])} debugger regions)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
