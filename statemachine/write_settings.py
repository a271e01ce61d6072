"""Write the run settings (mlpipeline.settings.Settings) into the two places the stack passes them on:
the state machine's ApplyDefaults state (`defaults`: setting name -> `${Parameter}`) and the
PipelineStateMachine's DefinitionSubstitutions in template.yaml (`Parameter: !Ref Parameter`).

    python statemachine/write_settings.py     (or `make settings`)

A new setting is then a field in Settings plus its parameter in template.yaml's Parameters;
tests/pipeline/test_settings_wiring.py fails while these two files disagree with the model.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

from mlpipeline.settings import Settings, template_parameter

REPO = Path(__file__).resolve().parent.parent
ASL = REPO / "statemachine" / "pipeline.asl.json"
TEMPLATE = REPO / "template.yaml"
APPLY_DEFAULTS_STATE = "ApplyDefaults"
# The settings are the last entries of DefinitionSubstitutions, under this line.
TEMPLATE_HEADER = "        # The run settings, written by `make settings` from mlpipeline.settings.Settings: edit that."
ENTRY_INDENT = " " * 8


def asl_defaults() -> dict[str, str]:
    """ApplyDefaults' `defaults`: every setting, as the substitution of its parameter (a string)."""
    return {f.name: "${" + template_parameter(f.name) + "}" for f in fields(Settings)}


def template_entries() -> list[str]:
    """The DefinitionSubstitutions lines. A list setting's parameter is a CommaDelimitedList, which a
    substitution takes joined (DefinitionSubstitutions values are strings)."""
    lines = []
    for f in fields(Settings):
        parameter = template_parameter(f.name)
        value = f'!Join [",", !Ref {parameter}]' if str(f.type).startswith("list") else f"!Ref {parameter}"
        lines.append(f"{ENTRY_INDENT}{parameter}: {value}")
    return lines


def with_asl_defaults(asl_text: str) -> str:
    asl: dict[str, Any] = json.loads(asl_text)
    asl["States"][APPLY_DEFAULTS_STATE]["Parameters"]["defaults"] = asl_defaults()
    return json.dumps(asl, indent=2) + "\n"


def with_template_entries(template_text: str) -> str:
    """template.yaml with the lines under TEMPLATE_HEADER (up to the next less-indented line) replaced."""
    lines = template_text.split("\n")
    if TEMPLATE_HEADER not in lines:
        raise ValueError(f"template.yaml lacks the settings header line:\n{TEMPLATE_HEADER}")
    start = lines.index(TEMPLATE_HEADER) + 1
    end = start
    while end < len(lines) and lines[end].startswith(ENTRY_INDENT) and lines[end].strip():
        end += 1
    return "\n".join([*lines[:start], *template_entries(), *lines[end:]])


def main() -> None:
    for path, rewrite in ((ASL, with_asl_defaults), (TEMPLATE, with_template_entries)):
        text = path.read_text()
        new = rewrite(text)
        if new != text:
            path.write_text(new)
            print(f"wrote {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
