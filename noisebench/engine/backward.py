"""The backward pass of a pack's MLPs, by hand and for every run at once: each piece turns
the gradient of the mean loss with respect to its output into the gradient with respect to its
input (and to its parameters). R runs, b examples, C classes, H units of a hidden layer.

The pass starts at a loss. A loss takes the logits [R, C, b] (classes in the middle, as the
forward pass makes them) and each run's labels [R, 1, b]; it adds every run's loss summed over
the batch to `loss_sum` [R] (float64, summed over the epoch; added rather than returned, so a
loss scales its sum in float64 as it adds it) and returns d(mean loss over the batch)/d(logits)
[R, C, b].

Adding a loss is one function here, its name in LOSSES and ModelSpec.loss, and one test
against its torch objective (tests/test_model_options.py). Parameters shared by the runs (a q,
a β) are bound to the function (functools.partial). A loss sees the whole shard at once:
parameters that differ per run (a transition matrix [R, C, C] for loss correction) are tensors
with the leading run axis, held by a callable object built for the shard's runs in pack.build,
as their labels are. A per-example weight or mask [R, 1, b] (co-teaching) scales each
example's term of both the sum and the gradient.

The gradients of a linear layer's weight and bias, aᵀg and Σ_b g, are not formed here: the
optimizer takes them straight into its state (optimizer.Optimizer.linear_grad_).
"""

from collections.abc import Callable

import torch
from torch import Tensor

from .model import stacked_empty

Loss = Callable[[Tensor, Tensor, Tensor], Tensor]  # (logits, labels, loss_sum) -> d/d(logits)


def _minus_one(like: Tensor, labels: Tensor) -> Tensor:
    """−1 at each label's place: scattered into probabilities, it subtracts the one-hot."""
    return torch.full(labels.shape, -1.0, dtype=like.dtype, device=like.device)


def cross_entropy(logits: Tensor, labels: Tensor, loss_sum: Tensor) -> Tensor:
    """Softmax cross-entropy: loss_i = −log softmax(z_i)[y_i].

    d(mean_i loss_i)/dz_i = (softmax(z_i) − onehot(y_i)) / b."""
    b = logits.shape[2]
    logp = torch.log_softmax(logits, dim=1)
    loss_sum.sub_(logp.gather(1, labels).sum((1, 2)))
    softmax = logp.exp_()
    return softmax.scatter_add_(1, labels, _minus_one(softmax, labels)).mul_(1.0 / b)


def sigmoid_mse(logits: Tensor, labels: Tensor, loss_sum: Tensor) -> Tensor:
    """Squared error of s = sigmoid(z) against one-hot targets, averaged over the classes:
    loss_i = Σ_c (s_ic − onehot_ic)² / C (torch.nn.MSELoss(sigmoid(z), one_hot)).

    d(mean_i loss_i)/dz_ic = 2 (s_ic − onehot_ic) · s_ic (1 − s_ic) / (C b)."""
    _, classes, b = logits.shape
    s = torch.sigmoid(logits)
    diff = s.scatter_add(1, labels, _minus_one(s, labels))
    loss_sum.add_(diff.square().sum((1, 2)), alpha=1.0 / classes)
    diff.mul_(2.0 / (classes * b))
    return torch.ops.aten.sigmoid_backward.grad_input(diff, s, grad_input=diff)


LOSSES: dict[str, Loss] = {"cross-entropy": cross_entropy, "mse": sigmoid_mse}

# a = act(z): dL/dz from g = dL/da and the output a, in place in g:
# relu' = [a > 0], sigmoid' = a (1 − a), tanh' = 1 − a².
ACTIVATIONS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "relu": lambda g, a: torch.ops.aten.threshold_backward.grad_input(g, a, 0, grad_input=g),
    "sigmoid": lambda g, a: torch.ops.aten.sigmoid_backward.grad_input(g, a, grad_input=g),
    "tanh": lambda g, a: torch.ops.aten.tanh_backward.grad_input(g, a, grad_input=g),
}


def linear_input(g: Tensor, weight: Tensor, out: Tensor) -> Tensor:
    """y = a·W + bias per run: dL/da = dL/dy · Wᵀ [R, b, in] from g = dL/dy [R, b, out]
    and W [R, in, out], written into `out`."""
    return torch.bmm(g, weight.mT, out=out)


def dropout_(g: Tensor, mask: Tensor) -> Tensor:
    """y = a · mask (inverted dropout: mask is 0 or 1/(1 − p)): dL/da = dL/dy · mask, in
    place in g [R, b, H]."""
    return g.mul_(mask)


def batchnorm_(g: Tensor, xhat: Tensor, invstd: Tensor, scale: Tensor) -> tuple[Tensor, Tensor]:
    """In place, g = dL/dy [R, b, H] becomes dL/dz for y = scale·x̂(z) + shift; returns the
    gradients of scale and shift [R, 1, H].

    dL/dz = scale · invstd · (g − mean_b(g) − x̂ · mean_b(g · x̂))."""
    b = g.shape[1]
    dshift = g.sum(1, keepdim=True)
    dscale = (g * xhat).sum(1, keepdim=True)
    g.sub_(dshift, alpha=1.0 / b).addcmul_(xhat, dscale, value=-1.0 / b)
    g.mul_(scale * invstd)
    return dscale, dshift


# --- noise-robust losses (the remedies; study.Method) --------------------------------------
# p = softmax(z) [R, C, b], e_y the one-hot of the label. Each gradient below is written as
# a multiple of (p − e_y) where it can be: one fused expression, checked against autograd in
# tests/test_methods.py.


def _softmax_minus_onehot(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(log p, p, p − e_y), each [R, C, b]."""
    logp = torch.log_softmax(logits, dim=1)
    p = logp.exp()
    return logp, p, p.scatter_add(1, labels, _minus_one(p, labels))


def generalized_cross_entropy(logits: Tensor, labels: Tensor, loss_sum: Tensor, q: float) -> Tensor:
    """Generalized cross-entropy (Zhang & Sabuncu 2018): loss_i = (1 − p_y^q) / q; q → 0 is
    cross-entropy, q = 1 the mean absolute error.

    d(mean_i loss_i)/dz_i = p_y^q · (p_i − e_y) / b."""
    b = logits.shape[2]
    logp, _, g = _softmax_minus_onehot(logits, labels)
    py_q = logp.gather(1, labels).mul_(q).exp_()  # [R, 1, b]
    loss_sum.add_((1 - py_q).sum((1, 2)), alpha=1.0 / q)
    return g.mul_(py_q).mul_(1.0 / b)


def symmetric_cross_entropy(
    logits: Tensor, labels: Tensor, loss_sum: Tensor, alpha: float, beta: float, log_zero: float
) -> Tensor:
    """Symmetric cross-entropy (Wang et al. 2019): α·CE + β·RCE, where the reverse
    cross-entropy −Σ_k p_k log e_y[k] takes log 0 = A (`log_zero`, −4 in the paper), so
    RCE_i = −A (1 − p_y).

    d(mean_i loss_i)/dz_i = (α − β A p_y) · (p_i − e_y) / b."""
    b = logits.shape[2]
    logp, p, g = _softmax_minus_onehot(logits, labels)
    logpy, py = logp.gather(1, labels), p.gather(1, labels)  # [R, 1, b]
    loss_sum.add_((-alpha * logpy - beta * log_zero * (1 - py)).sum((1, 2)))
    return g.mul_(py.mul(-beta * log_zero).add_(alpha)).mul_(1.0 / b)


def soft_bootstrap(logits: Tensor, labels: Tensor, loss_sum: Tensor, beta: float) -> Tensor:
    """Soft bootstrapping (Reed et al. 2015): cross-entropy against β·e_y + (1 − β)·p, with the
    gradient through both (the paper's reading as entropy regularisation):
    loss_i = β·CE_i + (1 − β)·H(p_i), H(p) = −Σ_k p_k log p_k.

    d(mean_i loss_i)/dz_i = (β (p_i − e_y) − (1 − β) p_i ⊙ (log p_i + H(p_i))) / b."""
    b = logits.shape[2]
    logp, p, g = _softmax_minus_onehot(logits, labels)
    entropy = (p * logp).sum(1, keepdim=True).neg_()  # [R, 1, b]
    loss_sum.add_((-beta * logp.gather(1, labels) + (1 - beta) * entropy).sum((1, 2)))
    g.mul_(beta).sub_(p.mul_(logp.add_(entropy)), alpha=1 - beta)
    return g.mul_(1.0 / b)


def hard_bootstrap(logits: Tensor, labels: Tensor, loss_sum: Tensor, beta: float) -> Tensor:
    """Hard bootstrapping (Reed et al. 2015): cross-entropy against β·e_y + (1 − β)·e_ŷ, ŷ the
    model's own argmax (held fixed): loss_i = β·CE(y) + (1 − β)·CE(ŷ).

    d(mean_i loss_i)/dz_i = (p_i − β e_y − (1 − β) e_ŷ) / b."""
    b = logits.shape[2]
    logp = torch.log_softmax(logits, dim=1)
    guess = logp.argmax(1, keepdim=True)
    loss_sum.sub_((beta * logp.gather(1, labels) + (1 - beta) * logp.gather(1, guess)).sum((1, 2)))
    g = logp.exp_()
    g.scatter_add_(1, labels, torch.full(labels.shape, -beta, dtype=g.dtype, device=g.device))
    g.scatter_add_(1, guess, torch.full(guess.shape, beta - 1, dtype=g.dtype, device=g.device))
    return g.mul_(1.0 / b)


class ForwardCorrected:
    """Forward loss correction (Patrini et al. 2017) with each run's transition matrix
    T [R, C, C] (T[i, j] = P(noisy label j | true class i)): cross-entropy of the noisy label
    under the noisy-label probabilities u = Tᵀ p, loss_i = −log u_y.

    d(mean_i loss_i)/dz_ij = (p_ij − p_ij T[j, y] / u_y) / b."""

    def __init__(self, transition: Tensor):
        self.transition = transition

    def __call__(self, logits: Tensor, labels: Tensor, loss_sum: Tensor) -> Tensor:
        runs, classes, b = logits.shape
        p = torch.softmax(logits, dim=1)
        u = stacked_empty(runs, (classes, b), p.dtype, p.device)
        torch.bmm(self.transition.mT, p, out=u)  # [R, C, b]: u[k] = Σ_i T[i, k] p[i]
        uy = u.gather(1, labels)
        loss_sum.sub_(uy.log().sum((1, 2)))
        column = self.transition.gather(2, labels.expand(runs, classes, b))  # T[i, y_b]
        return p.sub_(p * column / uy).mul_(1.0 / b)


class BackwardCorrected:
    """Backward loss correction (Patrini et al. 2017): the vector of cross-entropies against
    every class, ℓ_k = −log p_k, corrected by T⁻¹: loss_i = Σ_k T⁻¹[y, k] ℓ_k (unbiased for
    the clean loss; it can be negative).

    d(mean_i loss_i)/dz_ij = (p_ij Σ_k T⁻¹[y, k] − T⁻¹[y, j]) / b."""

    def __init__(self, transition: Tensor):
        self.inverse = torch.linalg.inv(transition.double()).to(transition.dtype)

    def __call__(self, logits: Tensor, labels: Tensor, loss_sum: Tensor) -> Tensor:
        runs, classes, b = logits.shape
        logp = torch.log_softmax(logits, dim=1)
        row = self.inverse.mT.gather(2, labels.expand(runs, classes, b))  # T⁻¹[y_b, k]
        loss_sum.sub_((row * logp).sum((1, 2)))
        return logp.exp_().mul_(row.sum(1, keepdim=True)).sub_(row).mul_(1.0 / b)
