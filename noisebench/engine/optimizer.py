"""The fused optimizer: SGD with momentum or Adam over stacked parameters, by hand, and its
learning-rate schedule."""

import itertools
import math
from dataclasses import dataclass
from typing import Any

import torch

from ..study import TrainSpec
from .model import StackedMLP, stacked_like


def schedule(spec: TrainSpec, total_steps: int, step: int) -> tuple[float, float]:
    """The learning rate and momentum (SGD's momentum, Adam's beta1) of optimizer step `step`
    (0-based) out of `total_steps`, as torch.optim.lr_scheduler's schedulers give them when
    stepped once per epoch ("step") or once per optimizer step (the others)."""
    lr, momentum = spec.lr, spec.momentum if spec.optimizer == "sgd" else 0.9
    if spec.schedule == "step":
        epoch = step // (total_steps // spec.epochs)
        return lr * spec.gamma ** (epoch // spec.step_size), momentum
    if spec.schedule == "cosine":  # CosineAnnealingLR(T_max=total_steps, eta_min=0)
        return lr * (1 + math.cos(math.pi * step / total_steps)) / 2, momentum
    if spec.schedule == "onecycle":  # OneCycleLR(max_lr=lr, total_steps), its defaults
        initial = lr / 25.0
        phases = [  # (end step, start lr, end lr, start momentum, end momentum)
            (float(0.3 * total_steps) - 1, initial, lr, 0.95, 0.85),
            (total_steps - 1, lr, initial / 1e4, 0.85, 0.95),
        ]
        start = 0.0
        for i, (end, lr0, lr1, m0, m1) in enumerate(phases):
            if step <= end or i == len(phases) - 1:
                cos = math.cos(math.pi * (step - start) / (end - start)) + 1
                return lr1 + (lr0 - lr1) / 2.0 * cos, m1 + (m0 - m1) / 2.0 * cos
            start = end
    return lr, momentum


@dataclass(frozen=True)
class Slots:
    """Where each kind of parameter sits, layer by layer, in the optimizer's lists (`params`
    and every state list): the order of StackedMLP.parameters(), which checkpoints keep."""

    weights: range
    biases: range
    scales: range  # batchnorm's, per hidden layer (empty without batchnorm)
    shifts: range

    @classmethod
    def of(cls, model: StackedMLP) -> "Slots":
        kinds = (model.weights, model.biases, model.scales, model.shifts)
        ends = list(itertools.accumulate(len(kind) for kind in kinds))
        return cls(*(range(end - len(kind), end) for kind, end in zip(kinds, ends, strict=True)))


class Optimizer:
    """SGD with momentum (torch.optim.SGD's update) or Adam (torch.optim.Adam's), per element,
    over every parameter of `model`.

    Both act elementwise, so stacking runs changes no run's update. A step is `begin_step`,
    the gradients (`linear_grad_` for each linear layer, `norm_grad_` for each batchnorm), then
    `finish_step`. For SGD a linear layer's weight gradient never exists on its own: it is
    added into the momentum buffer inside the matmul. The learning rate follows
    `spec.schedule` over `total_steps` optimizer steps (None: a constant learning rate,
    whatever the schedule).
    """

    def __init__(
        self,
        model: StackedMLP,
        spec: TrainSpec,
        state: dict[str, list[torch.Tensor]] | None = None,
        *,
        total_steps: int | None = None,
    ):
        self.spec = spec
        self.params = model.parameters()
        self.slots = Slots.of(model)
        self.adam = spec.optimizer == "adam"
        self.step_count = 0
        self.total_steps = total_steps
        self.scheduled = total_steps is not None and spec.schedule != "constant"
        if self.scheduled and spec.schedule == "step" and total_steps % spec.epochs:
            raise ValueError(f"{total_steps} steps are not a whole number per epoch")
        # the learning rate and momentum (Adam: beta1) of the current step
        self.lr, self.momentum = spec.lr, spec.momentum if not self.adam else 0.9
        names = ("exp_avg", "exp_avg_sq", "grads") if self.adam else ("momentum",)
        # laid out as the parameters: the weight gradients are matmul outputs (stacked_empty)
        self.state = state or {name: [stacked_like(p, 0.0) for p in self.params] for name in names}

    def rows(self, start: int, stop: int, model: StackedMLP) -> "Optimizer":
        """The optimizer of runs [start, stop), on `model` (their rows), sharing this state."""
        view = Optimizer(
            model,
            self.spec,
            {name: [t[start:stop] for t in ts] for name, ts in self.state.items()},
            total_steps=self.total_steps,
        )
        view.step_count = self.step_count
        return view

    def begin_step(self) -> None:
        self.step_count += 1
        if self.scheduled:
            assert self.total_steps is not None
            self.lr, self.momentum = schedule(self.spec, self.total_steps, self.step_count - 1)

    def linear_grad_(self, layer: int, a: torch.Tensor, g: torch.Tensor, alpha: float = 1.0):
        """Take in the gradients of linear layer `layer` from its input a [R, b, in] and
        g = dL/d(output) [R, b, out]: aᵀg·alpha for its weights, Σ_b g for its bias."""
        weight, bias = self.slots.weights[layer], self.slots.biases[layer]
        if self.adam:
            grads = self.state["grads"]
            torch.bmm(a.mT, g, out=grads[weight])
            if alpha != 1.0:
                grads[weight].mul_(alpha)
            torch.sum(g, 1, keepdim=True, out=grads[bias])
            return
        momentum = self.state["momentum"]
        momentum[weight].baddbmm_(a.mT, g, beta=self.momentum, alpha=alpha)
        self._take_(bias, g.sum(1, keepdim=True))

    def norm_grad_(self, layer: int, dscale: torch.Tensor, dshift: torch.Tensor) -> None:
        """Take in the gradients of hidden layer `layer`'s batchnorm scale and shift."""
        self._take_(self.slots.scales[layer], dscale)
        self._take_(self.slots.shifts[layer], dshift)

    def _take_(self, slot: int, grad: torch.Tensor) -> None:
        if self.adam:
            self.state["grads"][slot].copy_(grad)
        else:
            self.state["momentum"][slot].mul_(self.momentum).add_(grad)

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
        torch._foreach_add_(self.params, momentum, alpha=-self.lr)

    def _adam(self, i: int, p: torch.Tensor) -> None:
        spec = self.spec
        beta1, beta2, eps = self.momentum, 0.999, 1e-8  # torch.optim.Adam's defaults
        g = self.state["grads"][i]
        if spec.weight_decay:
            g = g.add(p, alpha=spec.weight_decay)
        m, v = self.state["exp_avg"][i], self.state["exp_avg_sq"][i]
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        correction1 = 1 - beta1**self.step_count
        correction2 = 1 - beta2**self.step_count
        denom = (v.sqrt() / math.sqrt(correction2)).add_(eps)
        p.addcdiv_(m, denom, value=-self.lr / correction1)

    def state_dict(self) -> dict[str, Any]:
        kept = {k: v for k, v in self.state.items() if k != "grads"}  # grads are scratch
        return {"step": self.step_count, **kept}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_count = int(state["step"])
        for name, tensors in self.state.items():
            if name in state:
                for mine, saved in zip(tensors, state[name], strict=True):
                    mine.copy_(saved)
