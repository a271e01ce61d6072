"""Each debugger rule fires on a crafted case and stays quiet on a healthy one."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F

from imgclf import contract, debugger
from imgclf.networks import make_head


def test_loss_not_decreasing() -> None:
    healthy = [2.0 * 0.97 ** i for i in range(40)]
    assert debugger.loss_not_decreasing(healthy)[0] == debugger.NO_ISSUES
    plateau = healthy[:20] + [healthy[19]] * 20
    status, evidence = debugger.loss_not_decreasing(plateau)
    assert status == debugger.ISSUES and evidence["window"] == 3  # windows 0-1-2 fall, 3 is flat
    rising = healthy[:20] + [3.0] * 10
    status, evidence = debugger.loss_not_decreasing(rising)
    assert status == debugger.ISSUES and "above the best window" in evidence["summary"]
    assert debugger.loss_not_decreasing([*healthy[:5], math.nan])[0] == debugger.ISSUES
    assert debugger.loss_not_decreasing(healthy[:15])[0] == debugger.NO_ISSUES  # too short to judge


def test_overfit() -> None:
    train = [1.0, 0.8, 0.6]
    assert debugger.overfit(train, [1.05, 0.85, 0.65])[0] == debugger.NO_ISSUES
    status, evidence = debugger.overfit(train, [1.05, 0.85, 0.9])
    assert status == debugger.ISSUES and evidence["epoch"] == 3
    assert debugger.overfit(train, [1.05, 0.95, 0.65], patience=2)[0] == debugger.NO_ISSUES
    assert debugger.overfit(train, [1.2, 0.85, 0.65], start_step=1)[0] == debugger.NO_ISSUES


def test_overtraining() -> None:
    improving = [1.0, 0.8, 0.6, 0.5, 0.45]
    assert debugger.overtraining(improving, improving)[0] == debugger.NO_ISSUES
    stalled_valid = [1.0, 0.7, 0.705, 0.71, 0.72]
    status, evidence = debugger.overtraining(improving, stalled_valid)
    assert status == debugger.ISSUES and evidence["valid_epochs_without_improvement"] == 3
    stalled_train = [1.0, 0.995, 0.994, 0.993, 0.992]
    status, evidence = debugger.overtraining(stalled_train, improving)
    assert status == debugger.ISSUES and "training loss" in evidence["summary"]


def _seeded_head(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)  # the head's own initialization must not depend on what ran before
    return make_head(32, 4)


def _record_init_steps(head: torch.nn.Module, steps: int = 10, batch_size: int = 256) -> debugger.DebuggerRecorder:
    """Train `head` on a learnable problem for a few steps, recording what the rule reads.

    Batches of 256 keep the minibatch loss noise well below its fall over ten steps: with batches of 25, one
    seed in six stalls for five steps by chance, which the rule (like SageMaker's) rightly reports.
    """
    generator = torch.Generator().manual_seed(0)
    features = torch.rand(steps * batch_size, 32, generator=generator) * 2
    labels = (features[:, :4].argmax(1))
    optimizer = torch.optim.Adam(head.parameters(), lr=0.01)
    recorder = debugger.DebuggerRecorder()
    probe = debugger.InitStatsProbe(head)
    for step in range(steps):
        batch = slice(step * batch_size, (step + 1) * batch_size)
        loss = F.cross_entropy(head(features[batch]), labels[batch])
        optimizer.zero_grad()
        loss.backward()
        recorder.init_steps.append(probe.collect(step))
        optimizer.step()
        recorder.record_step(loss.item())
    probe.remove()
    return recorder


@pytest.mark.parametrize("seed", range(5))
def test_poor_weight_initialization_on_real_probes(seed: int) -> None:
    healthy = _record_init_steps(_seeded_head(seed))
    status, evidence = debugger.poor_weight_initialization(healthy.init_steps, healthy.step_losses)
    assert status == debugger.NO_ISSUES, evidence
    dead = _seeded_head(seed)
    torch.nn.init.zeros_(dead[0].weight)
    torch.nn.init.constant_(dead[0].bias, -1.0)  # every hidden unit dead: its inputs have no variance
    recorder = _record_init_steps(dead)
    status, evidence = debugger.poor_weight_initialization(recorder.init_steps, recorder.step_losses)
    assert status == debugger.ISSUES and "variance ratio" in evidence["summary"]
    exploding = _seeded_head(seed)
    torch.nn.init.normal_(exploding[0].weight, std=30.0)  # hidden layer 1000x the input's variance
    recorder = _record_init_steps(exploding)
    assert debugger.poor_weight_initialization(recorder.init_steps, recorder.step_losses)[0] == debugger.ISSUES


def test_poor_weight_initialization_crafted_gradients_and_loss() -> None:
    flat_gradients = [{"step": 0, "input_variance": {"a": 1.0, "b": 2.0}, "gradient_p5": 0.0, "gradient_p95": 1e-5}]
    assert debugger.poor_weight_initialization(flat_gradients, [1.0])[0] == debugger.ISSUES
    ok = [{"step": i, "input_variance": {"a": 1.0, "b": 2.0}, "gradient_p5": -0.1, "gradient_p95": 0.1}
          for i in range(10)]
    assert debugger.poor_weight_initialization(ok, [1.0 - 0.05 * i for i in range(10)])[0] == debugger.NO_ISSUES
    stuck = [1.0, 0.9] + [0.95] * 8
    assert debugger.poor_weight_initialization(ok, stuck)[0] == debugger.ISSUES


def test_recorder_evaluates_all_rules_and_reports_errors() -> None:
    recorder = debugger.DebuggerRecorder()
    recorder.record_epoch(1.0, 1.0)
    recorder.parameters["overfit"]["unknown_parameter"] = 1  # a broken configuration -> Error, not a crash
    results = {r.rule: r for r in recorder.evaluate()}
    assert set(results) == set(debugger.RULE_NAMES)
    assert results["overfit"].status == debugger.ERROR
    assert results["overtraining"].status == debugger.NO_ISSUES
    assert results["overfit"].log_line().startswith("Debugger rule Overfit: Error")
    restored = debugger.DebuggerRecorder.from_state_dict(recorder.state_dict())
    assert restored.train_losses == [1.0]


def test_parse_stop_on_rule() -> None:
    assert debugger.parse_stop_on_rule("none") == []
    assert debugger.parse_stop_on_rule("any") == list(debugger.RULE_NAMES)
    assert debugger.parse_stop_on_rule("Overfit, loss_not_decreasing") == ["overfit", "loss_not_decreasing"]
    with pytest.raises(ValueError, match="unknown rule"):
        debugger.parse_stop_on_rule("vanishing_gradient")


def test_each_rule_line_is_read_by_its_metric_regex() -> None:
    """The line train.py prints for a rule carries 1 (IssuesFound) or 0 (NoIssuesFound), and the rule's
    MetricDefinition reads exactly that; an Error line gives no datapoint, and no rule reads another's."""
    definitions = {d["Name"]: d["Regex"] for d in contract.metric_definitions()}
    for rule, sagemaker_rule in contract.DEBUGGER_RULES.items():
        regex = definitions[contract.rule_metric_name(sagemaker_rule)]
        log = "\n".join(debugger.RuleResult(rule, status, {"summary": "loss fell (3/4) in 2 windows"}, {}).log_line()
                        for status in (debugger.NO_ISSUES, debugger.ISSUES, debugger.ERROR, debugger.NO_ISSUES))
        assert [float(v) for v in re.findall(regex, log)] == [0.0, 1.0, 0.0]
        others = [r for name, r in definitions.items() if name.startswith("rule ") and r != regex]
        assert all(not re.findall(other, log) for other in others)
    assert contract.final_metrics(debugger.RuleResult("overfit", debugger.ISSUES, {}, {}).log_line()) == {
        "rule Overfit": 1.0}


def test_metric_definitions_respect_sagemaker_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    definitions = contract.metric_definitions()
    assert len(definitions) <= contract.MAX_METRIC_DEFINITIONS
    assert {contract.rule_metric_name(r) for r in contract.DEBUGGER_RULES.values()} <= {d["Name"] for d in definitions}
    monkeypatch.setattr(contract, "METRIC_REGEXES", {f"m{i}": "x ([0-9]+)" for i in range(41)})
    with pytest.raises(ValueError, match="41 metric definitions"):
        contract.metric_definitions()
    monkeypatch.setattr(contract, "METRIC_REGEXES", {"m": "x" * 501})
    with pytest.raises(ValueError, match="too long"):
        contract.metric_definitions()
