"""The fused optimizer: SGD with momentum or Adam over stacked parameters, by hand."""

import math
from typing import Any

import torch

from ..study import TrainSpec
from .model import StackedMLP


class Optimizer:
    """SGD with momentum (torch.optim.SGD's update) or Adam (torch.optim.Adam's), per element.

    Both act elementwise, so stacking runs changes no run's update. For SGD the weight gradient
    never exists on its own: `weight_grad_` adds it into the momentum buffer inside the matmul.
    """

    def __init__(
        self,
        weights: list[torch.Tensor],
        biases: list[torch.Tensor],
        spec: TrainSpec,
        state: dict[str, list[torch.Tensor]] | None = None,
    ):
        self.spec = spec
        self.weights, self.biases = weights, biases
        self.params = [*weights, *biases]
        self.adam = spec.optimizer == "adam"
        self.step_count = 0
        names = ("exp_avg", "exp_avg_sq", "grads") if self.adam else ("momentum",)
        self.state = state or {name: [torch.zeros_like(p) for p in self.params] for name in names}

    def rows(self, start: int, stop: int, model: StackedMLP) -> "Optimizer":
        """The optimizer of runs [start, stop), on `model` (their rows), sharing this state."""
        view = Optimizer(
            model.weights,
            model.biases,
            self.spec,
            {name: [t[start:stop] for t in ts] for name, ts in self.state.items()},
        )
        view.step_count = self.step_count
        return view

    def begin_step(self) -> None:
        self.step_count += 1

    def weight_grad_(self, layer: int, a: torch.Tensor, g: torch.Tensor, alpha: float = 1.0):
        """Take in the gradient aᵀg·alpha of weights[layer] and its bias gradient Σ_b g
        (g: [R, b, out]); `finish_step` applies them."""
        nb = len(self.weights)
        if self.adam:
            grads = self.state["grads"]
            torch.bmm(a.mT, g, out=grads[layer])
            if alpha != 1.0:
                grads[layer].mul_(alpha)
            torch.sum(g, 1, keepdim=True, out=grads[nb + layer])
            return
        m = self.spec.momentum
        momentum = self.state["momentum"]
        momentum[layer].baddbmm_(a.mT, g, beta=m, alpha=alpha)
        momentum[nb + layer].mul_(m).add_(g.sum(1, keepdim=True))

    def finish_step(self) -> None:
        """Apply every parameter's update (all gradients of the step are in)."""
        spec = self.spec
        if self.adam:
            for i, p in enumerate(self.params):
                self._adam(i, p)
            return
        momentum = self.state["momentum"]
        if spec.weight_decay:
            torch._foreach_add_(momentum, self.params, alpha=spec.weight_decay)
        torch._foreach_add_(self.params, momentum, alpha=-spec.lr)

    def _adam(self, i: int, p: torch.Tensor) -> None:
        spec = self.spec
        beta1, beta2, eps = 0.9, 0.999, 1e-8  # torch.optim.Adam's defaults
        g = self.state["grads"][i]
        if spec.weight_decay:
            g = g.add(p, alpha=spec.weight_decay)
        m, v = self.state["exp_avg"][i], self.state["exp_avg_sq"][i]
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        correction1 = 1 - beta1**self.step_count
        correction2 = 1 - beta2**self.step_count
        denom = (v.sqrt() / math.sqrt(correction2)).add_(eps)
        p.addcdiv_(m, denom, value=-spec.lr / correction1)

    def state_dict(self) -> dict[str, Any]:
        kept = {k: v for k, v in self.state.items() if k != "grads"}  # grads are scratch
        return {"step": self.step_count, **kept}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_count = int(state["step"])
        for name, tensors in self.state.items():
            if name in state:
                for mine, saved in zip(tensors, state[name], strict=True):
                    mine.copy_(saved)
