"""Optimisers: SGD with selective weight decay, SAM as a wrapper, and an EMA of the weights."""
from __future__ import annotations

import contextlib
import copy

import torch
from torch import nn


def parameter_groups(model: nn.Module, weight_decay: float, decay_bn_bias: bool) -> list[dict]:
    """Conv/linear weights get weight decay; BN parameters and biases only if ``decay_bn_bias``.

    The study's L2 applies to everything (decay_bn_bias=True); excluding the 1-D parameters is the
    common modern choice, since decaying a BN scale only changes the effective learning rate.
    """
    decay, no_decay = [], []
    for param in model.parameters():
        (decay if param.ndim > 1 or decay_bn_bias else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def make_sgd(model: nn.Module, lr: float, momentum: float, nesterov: bool, weight_decay: float,
             decay_bn_bias: bool) -> torch.optim.SGD:
    device = next(model.parameters()).device
    # The fused CUDA kernel updates every parameter in one launch; elsewhere use foreach.
    kind = {"fused": True} if device.type == "cuda" else {"foreach": True}
    return torch.optim.SGD(parameter_groups(model, weight_decay, decay_bn_bias), lr=lr, momentum=momentum,
                           nesterov=nesterov and momentum > 0, **kind)


class SAM:
    """Sharpness-Aware Minimisation (Foret et al., 2021) around any base optimiser.

    Per step: backward at w, ``perturb()`` moves to w + rho * g / ||g||, a second backward there,
    ``restore()`` goes back to w, and the base optimiser steps with the sharpness-aware gradient.
    Everything stays on the device (the norm is a tensor), so there is no host sync. Gradients are
    float32 even under bf16 autocast, because the parameters are float32. ``restore()`` copies w
    back rather than subtracting the offset, whose rounding would differ between data-parallel
    processes (each perturbs by its own gradient) and let their replicas drift apart.
    """

    def __init__(self, base: torch.optim.Optimizer, rho: float = 0.05):
        if not rho > 0:
            raise ValueError(f"SAM's rho must be > 0; got {rho}")
        self.base, self.rho = base, rho
        # (the tensors perturb() moved, copies of them as they were), until restore() puts them back
        self._saved: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None

    @property
    def param_groups(self):
        return self.base.param_groups

    def _params_with_grad(self) -> list[torch.Tensor]:
        return [p for group in self.base.param_groups for p in group["params"] if p.grad is not None]

    @torch.no_grad()
    def perturb(self) -> None:
        params = self._params_with_grad()
        grads = [p.grad for p in params]
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
        # the weights as they were (x * 1.0 is exact; one fused launch rather than one copy per tensor)
        self._saved = params, torch._foreach_mul(params, 1.0)
        torch._foreach_add_(params, torch._foreach_mul(grads, self.rho / (norm + 1e-12)))
        self.base.zero_grad(set_to_none=True)

    @torch.no_grad()
    def restore(self) -> None:
        if self._saved is None:
            raise RuntimeError("SAM.restore() has nothing to restore: call perturb() first, once per restore()")
        params, copies = self._saved  # the tensors perturb() moved, whatever has grads now
        torch._foreach_copy_(params, copies)
        self._saved = None

    def step(self) -> None:
        self.base.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return self.base.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.base.load_state_dict(state)


@contextlib.contextmanager
def frozen_bn_stats(model: nn.Module):
    """Batch norm still normalises with batch statistics but leaves its running averages alone.

    SAM's second forward pass runs at perturbed weights; letting it update the running mean/var
    would count every batch twice and bias them toward the perturbed model. Momentum 0 makes the
    update ``running = running``.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.momentum = 0.0
    try:
        yield
    finally:
        for bn, momentum in zip(bns, saved):
            bn.momentum = momentum


class ModelEMA:
    """Exponential moving average of a model's parameters and float buffers (BN statistics).

    torch.optim.swa_utils.AveragedModel would do this but reads its step counter back to the host
    on every update; this keeps the count on the host and updates with one fused lerp.
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), e.g. 0.999; got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.updates = 0

    def _pairs(self, model: nn.Module):
        ema = list(self.module.parameters()) + [b for b in self.module.buffers() if b.is_floating_point()]
        live = list(model.parameters()) + [b for b in model.buffers() if b.is_floating_point()]
        return ema, live

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        # Warm-up as in timm/TF: a short average early on, so the EMA is usable from the start.
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        ema, live = self._pairs(model)
        torch._foreach_lerp_(ema, [t.detach() for t in live], 1.0 - decay)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = state["updates"]
