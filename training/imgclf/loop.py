"""One epoch of training and one evaluation pass, as torchvision's references/classification/train.py has
them (`train_one_epoch`, `evaluate`), and how a batch becomes logits (`Forward`). imgclf.engine runs them
epoch after epoch.

Losses are per-sample means of the cross-entropy (summed over samples, divided by the number of samples,
all-reduced across processes), not the course starter code's sum / number-of-batches.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from imgclf import contract, debugger, distributed, monitoring, optim, profiling
from imgclf.precision import FrozenBackbone, PrecisionPlan


@dataclass
class SplitResult:
    loss: float
    accuracy: float
    correct: int
    total: int
    confusion: torch.Tensor | None = None
    prediction_baseline: dict[str, Any] | None = None

    def line(self, split: str) -> str:
        return contract.format_split_line(split, self.loss, self.accuracy, self.correct, self.total)  # type: ignore[arg-type]


def unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, DistributedDataParallel) else module


class Forward:
    """How a batch becomes logits, for the three ways of training: cached features (head only), images
    through a frozen backbone (no autograd through it), or the whole model."""

    def __init__(self, model: nn.Module, trainable: nn.Module, plan: PrecisionPlan, mode: str,
                 backbone: FrozenBackbone | None):
        self.model = model
        self.backbone = backbone
        self.trainable = trainable  # possibly DDP-wrapped
        self.plan = plan
        self.mode = mode  # "features" | "frozen" | "full"

    def __call__(self, inputs: torch.Tensor, train: bool) -> torch.Tensor:
        module = self.trainable if train else unwrap(self.trainable)
        if self.mode == "features":
            return module(inputs)
        if self.mode == "frozen":
            assert self.backbone is not None
            return module(self.backbone(inputs))
        with self.plan.autocast():
            return module(self.plan.prepare_input(inputs)).float()


class InitStats:
    """The statistics of the first training steps that the poor-weight-initialization rule reads: a probe
    on the trainable module while the recorder wants more of them, removed as soon as it has enough."""

    def __init__(self, recorder: debugger.DebuggerRecorder, module: nn.Module):
        self.recorder = recorder
        self.module = module
        self.probe: debugger.InitStatsProbe | None = None

    def before_forward(self) -> None:
        if self.probe is None and self.recorder.wants_init_stats():
            self.probe = debugger.InitStatsProbe(self.module)

    def after_backward(self) -> None:
        if self.probe is not None:
            self.recorder.init_steps.append(self.probe.collect(len(self.recorder.step_losses)))
            if not self.recorder.wants_init_stats():
                self.remove()

    def remove(self) -> None:
        if self.probe is not None:
            self.probe.remove()
            self.probe = None


def train_one_epoch(forward: Forward, optimizer: optim.Adam, loader: Iterable, ctx: distributed.DistContext,
                    init_stats: InitStats, profiler: profiling.StepProfiler,
                    timer: profiling.StepTimer) -> tuple[SplitResult, float]:
    """One pass over the train split: its loss and accuracy (all ranks) and the seconds the pass took. Every
    step's loss goes to the debugger recorder, its time split (data / compute) to `timer`."""
    recorder = init_stats.recorder
    forward.model.train()
    sums = torch.zeros(3, dtype=torch.float64)
    started = time.perf_counter()
    t_last = time.perf_counter()
    for inputs, targets in loader:
        t_data = time.perf_counter() - t_last
        inputs, targets = inputs.to(ctx.device, non_blocking=True), targets.to(ctx.device)
        init_stats.before_forward()
        logits = forward(inputs, train=True)
        loss = F.cross_entropy(logits.float(), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        init_stats.after_backward()
        optimizer.step()
        loss_value = loss.item()
        recorder.record_step(loss_value)
        sums += torch.tensor([loss_value * targets.numel(),
                              (logits.argmax(1) == targets).sum().item(), targets.numel()], dtype=torch.float64)
        profiler.step()
        now = time.perf_counter()
        timer.record(t_data, now - t_last - t_data)
        t_last = now
    seconds = time.perf_counter() - started
    sums = distributed.all_reduce_sum(sums, ctx)
    return SplitResult(sums[0].item() / sums[2].item(), sums[1].item() / sums[2].item(),
                       int(sums[1].item()), int(sums[2].item())), seconds


@torch.no_grad()
def evaluate(forward: Forward, loader: Iterable, num_classes: int, ctx: distributed.DistContext,
             confusion: bool = False, baseline_split: str | None = None) -> SplitResult:
    """Loss and accuracy of a split; its confusion matrix and its prediction-monitoring baseline
    (imgclf.monitoring: the statistics the inference Lambda emits) when asked."""
    forward.model.eval()
    sums = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, count
    moments = torch.zeros(6, dtype=torch.float64)  # top-1: n, sum, squares; entropy: n, sum, squares
    matrix = torch.zeros(num_classes * num_classes, dtype=torch.int64)
    for inputs, targets in loader:
        inputs, targets = inputs.to(ctx.device, non_blocking=True), targets.to(ctx.device)
        logits = forward(inputs, train=False).float()
        predictions = logits.argmax(1)
        sums += torch.tensor([F.cross_entropy(logits, targets, reduction="sum").item(),
                              (predictions == targets).sum().item(), targets.numel()], dtype=torch.float64)
        if confusion:
            matrix += torch.bincount((targets * num_classes + predictions).cpu(), minlength=num_classes ** 2)
        if baseline_split is not None:
            moments += prediction_moments(logits)
    sums = distributed.all_reduce_sum(sums, ctx)
    if confusion:
        matrix = distributed.all_reduce_sum(matrix, ctx)
    loss_sum, correct, total = sums.tolist()
    total = int(total)
    prediction_baseline = None
    if baseline_split is not None and total:
        n1, s1, q1, ne, se, qe = distributed.all_reduce_sum(moments, ctx).tolist()
        prediction_baseline = monitoring.baseline(monitoring.StatSums(int(n1), s1, q1),
                                                  monitoring.StatSums(int(ne), se, qe), baseline_split)
    return SplitResult(loss_sum / total if total else float("nan"), correct / total if total else 0.0,
                       int(correct), total, matrix.view(num_classes, num_classes) if confusion else None,
                       prediction_baseline)


def prediction_moments(logits: torch.Tensor) -> torch.Tensor:
    """[n, sum, sum of squares] of the top-1 probability and of the top-k entropy of a batch: the same
    statistics as monitoring.prediction_stats on the endpoint's answer (vectorized; a test checks they agree)."""
    probabilities = logits.float().softmax(1).double()
    head = probabilities.topk(min(monitoring.ENTROPY_TOP_K, probabilities.shape[1]), dim=1).values
    rest = (1.0 - head.sum(1, keepdim=True)).clamp_min(0.0)
    buckets = torch.cat([head, rest], 1)
    entropy = -torch.where(buckets > 0, buckets * buckets.clamp_min(1e-300).log(), torch.zeros_like(buckets)).sum(1)
    top1 = head[:, 0]
    n = float(top1.numel())
    return torch.tensor([n, top1.sum().item(), (top1 * top1).sum().item(),
                         n, entropy.sum().item(), (entropy * entropy).sum().item()], dtype=torch.float64)
