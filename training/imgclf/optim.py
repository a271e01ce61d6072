"""Adam for training the head, without torch.optim's start-up cost.

Why not `torch.optim.Adam` itself: constructing any `torch.optim.Optimizer` imports `torch._dynamo`
(torch/_compile.py's lazy `_disable_dynamo`), about 0.9 s on this 2-core CPU. A feature-cached tuning
trial takes 2-3 s in all, so that import alone was a third of it. The update below is torch's own
(`torch.optim.adam.adam`, the function `torch.optim.Adam.step` calls, which does not import dynamo); only
the bookkeeping (state, zero_grad, state_dict) is ours, and a test checks it matches `torch.optim.Adam`
step for step.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch.optim.adam import adam


class Adam:
    """The subset of `torch.optim.Adam` the training loop uses: step, zero_grad, param_groups' lr,
    state_dict / load_state_dict (checkpoints). Defaults as torch's: betas (0.9, 0.999), eps 1e-8."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.params = list(params)
        if not self.params:
            raise ValueError("Adam got no parameters to optimise")
        self.param_groups = [{"lr": lr, "betas": betas, "eps": eps}]
        self.state = [{"step": torch.tensor(0.0), "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                       "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}
                      for p in self.params]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        group = self.param_groups[0]
        live = [(p, s) for p, s in zip(self.params, self.state, strict=True) if p.grad is not None]
        if not live:
            return
        params, states = zip(*live, strict=True)
        adam(list(params), [p.grad for p in params], [s["exp_avg"] for s in states],
             [s["exp_avg_sq"] for s in states], [], [s["step"] for s in states],
             foreach=False, capturable=False, differentiable=False, fused=None, grad_scale=None, found_inf=None,
             has_complex=any(torch.is_complex(p) for p in params), amsgrad=False,
             beta1=group["betas"][0], beta2=group["betas"][1], lr=group["lr"], weight_decay=0.0,
             eps=group["eps"], maximize=False)

    def state_dict(self) -> dict[str, Any]:
        return {"param_groups": [dict(self.param_groups[0])],
                "state": [{name: value.clone() for name, value in s.items()} for s in self.state]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state["state"]
        if len(saved) != len(self.params) or any(
                s["exp_avg"].shape != p.shape for s, p in zip(saved, self.params, strict=True)):
            raise ValueError("optimizer state does not fit these parameters")
        self.param_groups = [dict(state["param_groups"][0])]
        self.state = [{name: value.clone() for name, value in s.items()} for s in saved]
