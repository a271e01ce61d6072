"""The run report's figures (matplotlib, PNG files): the learning curves, the tuning trials, the test
split's confusion matrix and per-class accuracy, and the sample requests' confidence against the
validation baseline. imgclf.report reads the run's files and lays the figures out on its page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display here or in CI
import matplotlib.pyplot as plt

from imgclf import contract


def _epoch_rows(history: Any) -> list[dict[str, Any]]:
    if isinstance(history, dict):
        history = history.get("epochs", [])
    return [row for row in history or [] if isinstance(row, dict)]


def plot_learning_curves(history: Any, log_text: str, out: Path) -> bool:
    rows = _epoch_rows(history)
    series: dict[str, list[float]] = {}
    if rows:
        for key in rows[0]:
            if key.endswith(("loss", "accuracy")) and all(isinstance(r.get(key), int | float) for r in rows):
                series[key] = [float(r[key]) for r in rows]
    else:  # fall back to the log, read with the same regexes SageMaker uses
        metrics = contract.parse_metrics(log_text)
        series = {name: values for name, values in metrics.items() if name.endswith(("loss", "accuracy"))}
    if not series:
        return False
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for name, values in series.items():
        ax = ax_loss if name.endswith("loss") else ax_acc
        ax.plot(range(1, len(values) + 1), values, marker="o", label=name.replace("_", " "))
    for ax, title in ((ax_loss, "loss (per-sample mean cross-entropy)"), (ax_acc, "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return True


def plot_trials(complete: list[tuple[float, int, float]], stopped: list[tuple[float, int, float]],
                best: tuple[float, int, float], out: Path) -> None:
    """Objective against lr and batch size, one point (lr, batch size, objective) per trial, the best starred."""
    fig, (ax_lr, ax_bs) = plt.subplots(1, 2, figsize=(11, 4))
    for points, color, label in ((complete, "tab:blue", "complete"),
                                 (stopped, "tab:gray", "stopped early (last value)")):
        if not points:
            continue
        lrs, sizes, values = zip(*points, strict=True)
        ax_lr.scatter(lrs, values, c=color, label=label)
        ax_bs.scatter(sizes, values, c=color, label=label)
    best_lr, best_size, best_objective = best
    ax_lr.scatter([best_lr], [best_objective], marker="*", s=250, c="tab:red", label="best")
    ax_bs.scatter([best_size], [best_objective], marker="*", s=250, c="tab:red", label="best")
    ax_lr.set_xscale("log")
    ax_bs.set_xscale("log", base=2)
    for ax, xlabel in ((ax_lr, "lr (log scale)"), (ax_bs, "batch size")):
        ax.set_xlabel(xlabel)
        ax.set_ylabel(contract.OBJECTIVE_METRIC_NAME)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("tuning trials: objective (lower is better)")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def plot_evaluation(evaluation: Any, out: Path) -> list[dict[str, Any]]:
    if not isinstance(evaluation, dict) or "confusion_matrix" not in evaluation:
        return []
    matrix = evaluation["confusion_matrix"]
    names = evaluation.get("class_names") or [str(i) for i in range(len(matrix))]
    per_class = evaluation.get("per_class_accuracy")
    if isinstance(per_class, dict):
        per_class = [per_class.get(name) for name in names]
    if per_class is None:
        per_class = [row[i] / max(1, sum(row)) for i, row in enumerate(matrix)]
    size = max(5.0, 0.35 * len(names) + 3)
    fig, (ax_cm, ax_pc) = plt.subplots(1, 2, figsize=(2 * size + 1, size),
                                       gridspec_kw={"width_ratios": [1.2, 1]})
    image = ax_cm.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax_cm, fraction=0.046)
    show_names = len(names) <= 40  # 133 dog breeds: the matrix is still readable, the names are not
    ticks = range(len(names))
    ax_cm.set_xticks(ticks if show_names else [])
    ax_cm.set_yticks(ticks if show_names else [])
    if show_names:
        ax_cm.set_xticklabels(names, rotation=90, fontsize=8)
        ax_cm.set_yticklabels(names, fontsize=8)
        if len(names) <= 15:
            for i, row in enumerate(matrix):
                for j, count in enumerate(row):
                    if count:
                        ax_cm.text(j, i, str(count), ha="center", va="center", fontsize=7)
    ax_cm.set_xlabel("predicted")
    ax_cm.set_ylabel("true")
    ax_cm.set_title("confusion matrix (test split)")
    ax_pc.barh(range(len(names)), per_class, color="tab:green")
    ax_pc.set_yticks(range(len(names)) if show_names else [])
    if show_names:
        ax_pc.set_yticklabels(names, fontsize=8)
    ax_pc.invert_yaxis()
    ax_pc.set_xlim(0, 1)
    ax_pc.set_title("per-class accuracy (test split)")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return [{"class": name, "accuracy": acc, "images": sum(row)}
            for name, acc, row in zip(names, per_class, matrix, strict=False)]


def plot_confidence(samples: list[float], mean: float, std: float, threshold: float | None, out: Path) -> None:
    """The sample requests' top-1 probabilities against the baseline's mean, ±1 standard deviation and the
    drift alarm's threshold."""
    fig, ax = plt.subplots(figsize=(9, 2.6))
    ax.axvspan(max(0.0, mean - std), min(1.0, mean + std), color="tab:blue", alpha=0.15, label="baseline ±1 sd")
    ax.axvline(mean, color="tab:blue", label=f"baseline mean {mean:.3f}")
    if threshold is not None:
        ax.axvline(threshold, color="tab:red", linestyle="--", label=f"drift threshold {threshold:.3f}")
    ax.scatter(samples, [0.5] * len(samples), c="black", zorder=3, label="sample requests")
    ax.axvline(sum(samples) / len(samples), color="black", linestyle=":",
               label=f"samples' mean {sum(samples) / len(samples):.3f}")
    ax.set_xlim(0, 1.02)
    ax.set_yticks([])
    ax.set_xlabel("top-1 probability")
    ax.legend(fontsize=8, loc="upper left", ncol=2)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
