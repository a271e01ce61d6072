"""The README's state-machine diagram and steps table are the ones generated from statemachine/pipeline.asl.json."""

from __future__ import annotations

import json

import asl_to_mermaid
import stack


def _asl() -> dict:
    return json.loads((stack.REPO / "statemachine" / "pipeline.asl.json").read_text())


def test_readme_diagram_matches_the_asl() -> None:
    block = asl_to_mermaid.block_in((stack.REPO / "README.md").read_text())
    assert block is not None, "README.md lacks the generated state-machine diagram"
    assert block == asl_to_mermaid.readme_block(_asl()), (
        "README's state-machine diagram is stale: run .venv/bin/python statemachine/asl_to_mermaid.py"
    )


def test_readme_steps_are_the_asl_comments() -> None:
    """Each step is described once, in its state's Comment; the README's table is generated from them."""
    readme = (stack.REPO / "README.md").read_text()
    block = asl_to_mermaid.block_in(readme, asl_to_mermaid.STEPS_BEGIN, asl_to_mermaid.STEPS_END)
    assert block is not None, "README.md lacks the generated steps table"
    assert block == asl_to_mermaid.steps_block(_asl()), (
        "README's steps table is stale: run .venv/bin/python statemachine/asl_to_mermaid.py"
    )
    asl = _asl()
    assert all("Comment" in state for state in asl["States"].values()), "every state describes itself"
    changed = _asl()
    changed["States"]["Deploy"]["Comment"] += " More."
    assert asl_to_mermaid.steps_block(changed) != asl_to_mermaid.steps_block(asl)


def test_every_state_and_transition_is_drawn() -> None:
    asl = _asl()
    diagram = asl_to_mermaid.mermaid(asl)
    for name, state in asl["States"].items():
        node = asl_to_mermaid._node_id(name)
        assert f'{node}' in diagram and f'"{name}' in diagram
        targets = [state.get("Next"), state.get("Default")] + [r["Next"] for r in state.get("Choices", [])]
        targets += [c["Next"] for c in state.get("Catch", [])]
        for target in filter(None, targets):
            assert f"{node} " in diagram and asl_to_mermaid._node_id(target) in diagram


def test_a_new_state_makes_the_diagram_stale() -> None:
    asl = _asl()
    asl["States"]["SmokeTest"] = {"Type": "Pass", "End": True}
    assert asl_to_mermaid.readme_block(asl) != asl_to_mermaid.readme_block(_asl())
