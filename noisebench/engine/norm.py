"""Batch normalisation of a pack's hidden layers, by hand (torch.nn.BatchNorm1d's semantics);
its backward is backward.batchnorm_.

Every tensor is per run, [R, 1, H]: a run's statistics are taken over its own batch only, so
stacking runs changes no run's numbers. Training normalises with the batch's mean and biased
variance and moves the running statistics towards them (the variance unbiased); evaluation
normalises with the running statistics.
"""

import torch

EPS = 1e-5
MOMENTUM = 0.1  # running = (1 - MOMENTUM) · running + MOMENTUM · batch statistic


def init(runs: int, width: int, device) -> tuple[torch.Tensor, ...]:
    """Scale 1, shift 0, running mean 0 and running variance 1, each [R, 1, width]."""
    ones = torch.ones(runs, 1, width, device=device)
    zeros = torch.zeros(runs, 1, width, device=device)
    return ones, zeros.clone(), zeros, ones.clone()


def train_(
    z: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    xhat: torch.Tensor,
) -> torch.Tensor:
    """Normalise z [R, b, H] in place with its batch statistics: z becomes scale·x̂ + shift.

    x̂ is written into `xhat` (same shape) and the running statistics are updated; returns
    1/sqrt(var + eps) [R, 1, H], which the backward pass needs with x̂."""
    b = z.shape[1]
    mean = z.sum(1, keepdim=True).div_(b)
    torch.sub(z, mean, out=xhat)
    var = xhat.square().sum(1, keepdim=True).div_(b)  # biased, as torch normalises
    invstd = var.add(EPS).rsqrt_()
    xhat.mul_(invstd)
    torch.addcmul(shift, xhat, scale, out=z)
    running_mean.mul_(1 - MOMENTUM).add_(mean, alpha=MOMENTUM)
    # unbiased, as torch keeps it (a batch of one, which torch refuses, adds its zero variance)
    running_var.mul_(1 - MOMENTUM).add_(var, alpha=MOMENTUM * b / max(b - 1, 1))
    return invstd


def _affine(scale, shift, running_mean, running_var) -> tuple[torch.Tensor, torch.Tensor]:
    alpha = scale * running_var.add(EPS).rsqrt_()
    return alpha, shift - running_mean * alpha


def infer_(h: torch.Tensor, scale, shift, running_mean, running_var) -> torch.Tensor:
    """h [R, B, H] normalised in place with the running statistics."""
    alpha, beta = _affine(scale, shift, running_mean, running_var)
    return h.mul_(alpha).add_(beta)


def infer(h: torch.Tensor, scale, shift, running_mean, running_var) -> torch.Tensor:
    """h normalised with the running statistics, out of place (autograd may go through h)."""
    alpha, beta = _affine(scale, shift, running_mean, running_var)
    return h * alpha + beta
