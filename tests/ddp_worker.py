"""Started by tests/test_distributed.py under torchrun (gloo processes on the CPU); not a test module.

    ddp_worker.py fail CONFIG_JSON RANK EPOCH   fit the config; process RANK raises after EPOCH
    ddp_worker.py sam OUT_JSON                  one SAM step under DDP, against references computed here
"""
import copy
import json
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.func import functional_call

from wrnlib import TrainConfig, WideResNet, distributed, fit, load_cifar10
from wrnlib.data import CIFAR10_MEAN, CIFAR10_STD
from wrnlib.engine import make_train_step
from wrnlib.optim import SAM, make_sgd

LR, RHO, BATCH = 0.5, 0.5, 32


def fail(config_file: str, rank: int, epoch: int) -> None:
    def stop(row):
        if int(os.environ["RANK"]) == rank and row["epoch"] == epoch:
            raise RuntimeError(f"injected failure on rank {rank} after epoch {epoch}")
    fit(TrainConfig.load(config_file), on_epoch_end=stop)


def norm(images: torch.Tensor) -> torch.Tensor:
    mean, std = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1), torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    return (images.float() / 255 - mean) / std


def grads_at(model, params, buffers, x, targets):
    """Gradient of the mean soft-label cross-entropy at ``params`` (train-mode batch norm)."""
    params = {k: v.detach().requires_grad_() for k, v in params.items()}
    logits = functional_call(model, (params, {k: b.clone() for k, b in buffers.items()}), (x,))
    loss = F.cross_entropy(logits, targets)
    return dict(zip(params, torch.autograd.grad(loss, list(params.values()))))


def sam_reference(model, shards, local: bool):
    """One SAM + plain SGD step over the shards: each perturbed by its own gradient (local) or the mean one."""
    w = {k: p.detach().clone() for k, p in model.named_parameters()}
    buffers = dict(model.named_buffers())
    g = [grads_at(model, w, buffers, x, t) for x, t in shards]
    if not local:
        g = [{k: sum(gi[k] for gi in g) / len(g) for k in w}] * len(shards)
    h = []
    for gi, (x, t) in zip(g, shards):
        size = torch.sqrt(sum((v ** 2).sum() for v in gi.values()))
        h.append(grads_at(model, {k: w[k] + RHO * gi[k] / (size + 1e-12) for k in w}, buffers, x, t))
    return {k: w[k] - LR * sum(hi[k] for hi in h) / len(h) for k in w}


def sam(out: str) -> None:
    config = TrainConfig(name="sam", device="cpu", batch_size=BATCH, optimizer="sam", sam_rho=RHO)
    ctx = distributed.setup(config)
    data = load_cifar10("sample")
    x, targets = norm(data.train_images[:BATCH]), torch.eye(10)[data.train_labels[:BATCH]]
    torch.manual_seed(0)
    model = WideResNet(10, 1)
    reference = copy.deepcopy(model)
    forward = ctx.wrap(model)
    optimizer = SAM(make_sgd(model, LR, 0.0, False, 0.0, True), RHO)
    step = make_train_step(model, forward, optimizer, device=torch.device("cpu"), bf16=False,
                           no_sync=ctx.no_sync(forward))
    step(ctx.shard(x), ctx.shard(targets))
    half = BATCH // ctx.world
    shards = [(x[i:i + half], targets[i:i + half]) for i in range(0, BATCH, half)]
    trained = dict(model.named_parameters())
    report = {}
    for name, local in (("local", True), ("global", False)):
        expected = sam_reference(reference, shards, local)
        report[name] = max((trained[k] - expected[k]).abs().max().item() for k in expected)
    report["moved"] = max((trained[k] - p).abs().max().item() for k, p in reference.named_parameters())
    if ctx.is_main:
        Path(out).write_text(json.dumps(report))
    ctx.close()


if __name__ == "__main__":
    if sys.argv[1] == "fail":
        fail(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        sam(sys.argv[2])
