"""imgclf.optim.Adam takes the same steps as torch.optim.Adam, and its state survives a checkpoint."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from imgclf import optim


def _head(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))


def _train(model: nn.Module, optimizer, steps: int, seed: int = 1) -> list[float]:
    generator = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        inputs = torch.randn(32, 16, generator=generator)
        targets = torch.randint(0, 3, (32,), generator=generator)
        loss = nn.functional.cross_entropy(model(inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_same_steps_as_torch_adam() -> None:
    ours, reference = _head(0), _head(0)
    ours_losses = _train(ours, optim.Adam(ours.parameters(), lr=0.01), steps=20)
    reference_losses = _train(reference, torch.optim.Adam(reference.parameters(), lr=0.01), steps=20)
    assert ours_losses == pytest.approx(reference_losses, rel=1e-6, abs=1e-7)
    for a, b in zip(ours.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_state_dict_resumes_exactly() -> None:
    straight = _head(0)
    _train(straight, optim.Adam(straight.parameters(), lr=0.01), steps=10)

    resumed = _head(0)
    first = optim.Adam(resumed.parameters(), lr=0.01)
    generator_steps = 5
    _train(resumed, first, steps=generator_steps)
    state = first.state_dict()
    second = optim.Adam(resumed.parameters(), lr=0.5)  # the checkpoint's lr wins, as with torch's
    second.load_state_dict(state)
    assert second.param_groups[0]["lr"] == 0.01
    # The remaining 5 steps see the same batches as steps 6-10 of the straight run.
    generator = torch.Generator().manual_seed(1)
    for _ in range(generator_steps):
        torch.randn(32, 16, generator=generator), torch.randint(0, 3, (32,), generator=generator)
    for _ in range(5):
        inputs = torch.randn(32, 16, generator=generator)
        targets = torch.randint(0, 3, (32,), generator=generator)
        loss = nn.functional.cross_entropy(resumed(inputs), targets)
        second.zero_grad()
        loss.backward()
        second.step()
    for a, b in zip(resumed.parameters(), straight.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="does not fit"):
        optim.Adam(nn.Linear(4, 2).parameters(), lr=0.1).load_state_dict(state)


def test_no_dynamo_import() -> None:
    """The reason this module exists: torch.optim optimizers import torch._dynamo (~1 s) on construction."""
    code = ("import sys, torch; from imgclf import optim; p = torch.nn.Parameter(torch.ones(2)); "
            "o = optim.Adam([p], lr=0.1); p.grad = torch.ones(2); o.step(); "
            "print('torch._dynamo' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
