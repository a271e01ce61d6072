"""Four SageMaker Debugger rules (loss not decreasing, overfit, overtraining, poor weight initialization),
evaluated inside the training script.

SageMaker Debugger's smdebug hook does not work with PyTorch 2.x, so the script records what the rules need
(per-step training loss, per-epoch train/valid loss, and for the first steps the variance of each trainable
layer's input and the spread of the gradients) and evaluates the rules itself at the end of every epoch.
Each rule reports NoIssuesFound / IssuesFound / Error with its evidence; `--stop-on-rule` stops training
when one fires, as Debugger's StopTraining action does. train.py prints each result as a metric line
(`Debugger rule Overfit: 1 (IssuesFound) ...`, imgclf.contract.format_rule_line) that the training job's
MetricDefinitions turn into the metric `rule Overfit` (1 = issues found, 0 = none), and writes the last
results to debugger-report.json. SageMaker Debugger itself is closed to new accounts: these in-script rules
are the signal.

Parameters and defaults follow SageMaker Debugger's built-in rules (sagemaker.debugger.rule_configs):
- loss_not_decreasing: num_steps=10, diff_percent=0.1, increase_threshold_percent=5. Deviation: the loss
  of a step is the mean over a window of num_steps steps (SageMaker compares single steps num_steps
  apart, which fires on per-batch noise).
- overfit: start_step=0, patience=1, ratio_threshold=0.1, on per-epoch mean losses:
  (valid - train) / train > ratio_threshold for `patience` consecutive epochs.
- overtraining: delta=0.01 (SageMaker's); patience_train=3, patience_validation=3 count EPOCHS here
  (SageMaker's 5 and 10 count evaluation steps of its collections); fires when the train or the
  validation loss has not improved by more than delta for that many epochs.
- poor_weight_initialization: threshold=10, distribution_range=0.001, patience=5, steps=10, over the
  first `steps` training steps: the max/min ratio of the variance of the inputs of the trainable layers
  exceeds threshold, or the 5th-95th percentile range of the gradients is below distribution_range, or
  the loss sets no new minimum for `patience` consecutive steps.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from imgclf import contract

logger = logging.getLogger(__name__)

NO_ISSUES = contract.RULE_NO_ISSUES
ISSUES = contract.RULE_ISSUES_FOUND
ERROR = contract.RULE_ERROR

# Our rule names -> the names SageMaker Debugger gives the built-in rules (RuleEvaluationStatus, the
# console); shared with the pipeline, which configures the same four rules on the training job when a
# stack opts in to SageMaker Debugger.
RULE_NAMES: tuple[str, ...] = tuple(contract.DEBUGGER_RULES)

DEFAULT_PARAMETERS: dict[str, dict[str, float]] = {
    "loss_not_decreasing": {"num_steps": 10, "diff_percent": 0.1, "increase_threshold_percent": 5},
    "overfit": {"start_step": 0, "patience": 1, "ratio_threshold": 0.1},
    "overtraining": {"patience_train": 3, "patience_validation": 3, "delta": 0.01},
    "poor_weight_initialization": {"threshold": 10, "distribution_range": 0.001, "patience": 5, "steps": 10},
}


@dataclass
class RuleResult:
    rule: str
    status: str
    evidence: dict[str, Any]
    parameters: dict[str, float]
    sagemaker_rule: str = ""

    def __post_init__(self) -> None:
        self.sagemaker_rule = self.sagemaker_rule or contract.DEBUGGER_RULES[self.rule]

    def log_line(self) -> str:
        """What train.py prints (stdout) after every evaluation; the rule's MetricDefinition reads it."""
        return contract.format_rule_line(self.sagemaker_rule, self.status, str(self.evidence.get("summary", "")))


# --------------------------------------------------------------------------------------------------
# The rules: pure functions of recorded series.


def loss_not_decreasing(step_losses: Sequence[float], num_steps: float = 10, diff_percent: float = 0.1,
                        increase_threshold_percent: float = 5) -> tuple[str, dict[str, Any]]:
    n = int(num_steps)
    bad = [i for i, v in enumerate(step_losses) if not math.isfinite(v)]
    if bad:
        return ISSUES, {"summary": f"loss is not finite at step {bad[0]}", "step": bad[0]}
    windows = [sum(step_losses[i:i + n]) / n for i in range(0, len(step_losses) - n + 1, n)]
    if len(windows) < 2:
        return NO_ISSUES, {"summary": f"not enough steps to compare ({len(step_losses)} < {2 * n})",
                           "windows": windows}
    best = windows[0]
    for k in range(1, len(windows)):
        previous, current = windows[k - 1], windows[k]
        if current > best * (1 + increase_threshold_percent / 100):
            return ISSUES, {"summary": f"mean loss of steps {k * n}-{k * n + n - 1} ({current:.4f}) is more than "
                                       f"{increase_threshold_percent}% above the best window ({best:.4f})",
                            "window": k, "window_losses": windows[: k + 1]}
        if current > previous * (1 - diff_percent / 100):
            return ISSUES, {"summary": f"mean loss of steps {k * n}-{k * n + n - 1} ({current:.4f}) did not fall "
                                       f"{diff_percent}% below steps {(k - 1) * n}-{k * n - 1} ({previous:.4f})",
                            "window": k, "window_losses": windows[: k + 1]}
        best = min(best, current)
    return NO_ISSUES, {"summary": f"loss fell in each of {len(windows) - 1} window(s) of {n} steps",
                       "window_losses": windows}


def overfit(train_losses: Sequence[float], valid_losses: Sequence[float], start_step: float = 0,
            patience: float = 1, ratio_threshold: float = 0.1) -> tuple[str, dict[str, Any]]:
    ratios = [(v - t) / t if t > 0 else math.inf for t, v in zip(train_losses, valid_losses, strict=False)]
    streak = 0
    for epoch, ratio in enumerate(ratios):
        if epoch < start_step:
            continue
        streak = streak + 1 if ratio > ratio_threshold else 0
        if streak >= patience:
            return ISSUES, {"summary": f"epoch {epoch + 1}: (valid - train) / train loss = {ratio:.3f} > "
                                       f"{ratio_threshold} for {streak} epoch(s)", "epoch": epoch + 1,
                            "ratios": ratios}
    return NO_ISSUES, {"summary": f"(valid - train) / train loss stayed <= {ratio_threshold}", "ratios": ratios}


def _stalled_for(series: Sequence[float], delta: float) -> tuple[int, int]:
    """(longest run of epochs without improving the best by more than delta, epoch where it ends)."""
    best, streak, longest, at = math.inf, 0, 0, -1
    for i, v in enumerate(series):
        if v < best - delta:
            best, streak = v, 0
        else:
            streak += 1
            if streak > longest:
                longest, at = streak, i
    return longest, at


def overtraining(train_losses: Sequence[float], valid_losses: Sequence[float], patience_train: float = 3,
                 patience_validation: float = 3, delta: float = 0.01) -> tuple[str, dict[str, Any]]:
    train_stall, train_at = _stalled_for(train_losses, delta)
    valid_stall, valid_at = _stalled_for(valid_losses, delta)
    evidence = {"train_epochs_without_improvement": train_stall, "valid_epochs_without_improvement": valid_stall}
    if valid_stall >= patience_validation:
        return ISSUES, {**evidence, "summary": f"validation loss did not improve by more than {delta} for "
                                               f"{valid_stall} epoch(s) (up to epoch {valid_at + 1})"}
    if train_stall >= patience_train:
        return ISSUES, {**evidence, "summary": f"training loss did not improve by more than {delta} for "
                                               f"{train_stall} epoch(s) (up to epoch {train_at + 1})"}
    return NO_ISSUES, {**evidence, "summary": "train and validation losses kept improving"}


def poor_weight_initialization(init_steps: Sequence[dict[str, Any]], step_losses: Sequence[float],
                               threshold: float = 10, distribution_range: float = 0.001, patience: float = 5,
                               steps: float = 10) -> tuple[str, dict[str, Any]]:
    records = list(init_steps)[: int(steps)]
    if not records:
        return NO_ISSUES, {"summary": "no training step recorded"}
    for record in records:
        variances = record["input_variance"]
        if len(variances) >= 2:
            low, high = min(variances.values()), max(variances.values())
            ratio = high / low if low > 0 else math.inf
            if ratio > threshold:
                return ISSUES, {"summary": f"step {record['step']}: input variance ratio across layers "
                                           f"{ratio:.3g} > {threshold}", "step": record["step"],
                                "input_variance": variances}
        spread = record["gradient_p95"] - record["gradient_p5"]
        if spread < distribution_range:
            return ISSUES, {"summary": f"step {record['step']}: gradient 5th-95th percentile range {spread:.3g} < "
                                       f"{distribution_range}", "step": record["step"]}
    losses = list(step_losses)[: int(steps)]
    best, streak = math.inf, 0
    for i, loss in enumerate(losses):
        if loss < best:
            best, streak = loss, 0
        else:
            streak += 1
            if streak >= patience:
                return ISSUES, {"summary": f"loss set no new minimum for {streak} steps (step {i})",
                                "losses": losses}
    last = records[-1]
    return NO_ISSUES, {"summary": f"input variances within {threshold}x, gradients spread, loss falling over "
                                  f"the first {len(records)} steps", "input_variance": last["input_variance"]}


# --------------------------------------------------------------------------------------------------
# Recording during training


@dataclass
class DebuggerRecorder:
    """What the rules read, recorded by the training loop. Checkpointed with the run."""

    parameters: dict[str, dict[str, float]] = field(default_factory=lambda: {k: dict(v) for k, v in
                                                                             DEFAULT_PARAMETERS.items()})
    step_losses: list[float] = field(default_factory=list)
    train_losses: list[float] = field(default_factory=list)
    valid_losses: list[float] = field(default_factory=list)
    init_steps: list[dict[str, Any]] = field(default_factory=list)

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> DebuggerRecorder:
        return cls(**state)

    @property
    def init_steps_wanted(self) -> int:
        return int(self.parameters["poor_weight_initialization"]["steps"])

    def wants_init_stats(self) -> bool:
        return len(self.init_steps) < self.init_steps_wanted

    def record_step(self, loss: float) -> None:
        self.step_losses.append(float(loss))

    def record_epoch(self, train_loss: float, valid_loss: float) -> None:
        self.train_losses.append(float(train_loss))
        self.valid_losses.append(float(valid_loss))

    def evaluate(self) -> list[RuleResult]:
        rules: dict[str, Callable[[], tuple[str, dict[str, Any]]]] = {
            "loss_not_decreasing": lambda: loss_not_decreasing(self.step_losses,
                                                               **self.parameters["loss_not_decreasing"]),
            "overfit": lambda: overfit(self.train_losses, self.valid_losses, **self.parameters["overfit"]),
            "overtraining": lambda: overtraining(self.train_losses, self.valid_losses,
                                                 **self.parameters["overtraining"]),
            "poor_weight_initialization": lambda: poor_weight_initialization(
                self.init_steps, self.step_losses, **self.parameters["poor_weight_initialization"]),
        }
        results = []
        for name, evaluate in rules.items():
            try:
                status, evidence = evaluate()
            except Exception as exc:  # a rule that cannot evaluate reports Error, as SageMaker's do
                status, evidence = ERROR, {"summary": f"{type(exc).__name__}: {exc}"}
            results.append(RuleResult(name, status, evidence, dict(self.parameters[name])))
        return results


class InitStatsProbe:
    """Forward pre-hooks on the trainable layers (Linear / Conv) that record the variance of their inputs,
    and the gradient percentiles after backward, for the first training steps."""

    def __init__(self, module: nn.Module):
        self.module = module
        self._variances: dict[str, float] = {}
        self._handles = []
        for name, layer in module.named_modules():
            if isinstance(layer, nn.Linear | nn.Conv2d) and any(p.requires_grad for p in layer.parameters()):
                self._handles.append(layer.register_forward_pre_hook(self._hook(name)))

    def _hook(self, name: str):
        def hook(_layer: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            self._variances[name] = float(inputs[0].detach().float().var())
        return hook

    def collect(self, step: int) -> dict[str, Any]:
        """Call after backward: the step's record."""
        grads = [p.grad.detach().flatten().float() for p in self.module.parameters()
                 if p.requires_grad and p.grad is not None]
        flat = torch.cat(grads) if grads else torch.zeros(1)
        if flat.numel() > 1_000_000:  # quantile() has a size limit; a strided sample is plenty
            flat = flat[:: flat.numel() // 1_000_000 + 1]
        p5, p95 = torch.quantile(flat, torch.tensor([0.05, 0.95])).tolist()
        record = {"step": step, "input_variance": dict(self._variances), "gradient_p5": p5, "gradient_p95": p95}
        self._variances = {}
        return record

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def parse_stop_on_rule(value: str) -> list[str]:
    """'none' -> [], 'any' -> every rule, else a comma list of rule names (snake_case or SageMaker's)."""
    value = value.strip()
    if value.lower() in ("", "none", "false"):
        return []
    if value.lower() in ("any", "all", "true"):
        return list(RULE_NAMES)
    by_sagemaker = {v.lower(): k for k, v in contract.DEBUGGER_RULES.items()}
    rules = []
    for item in value.split(","):
        key = item.strip().lower()
        name = key if key in RULE_NAMES else by_sagemaker.get(key)
        if name is None:
            raise ValueError(f"--stop-on-rule: unknown rule {item.strip()!r}; choose from {list(RULE_NAMES)}, "
                             "'any' or 'none'")
        rules.append(name)
    return rules


def report(results: list[RuleResult], stop_on: list[str], stopped: dict[str, Any] | None) -> dict[str, Any]:
    """debugger-report.json."""
    return {"rules": [asdict(r) for r in results], "stop_on_rule": stop_on, "stopped_training": stopped,
            "note": "rules evaluated in-script on recorded series (PyTorch 2.x has no smdebug hook); "
                    "see imgclf/debugger.py for parameters"}
