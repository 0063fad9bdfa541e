"""torch.cuda's graph API stood in for on the CPU, behaving as a CUDA graph behaves for the step it captures.

A capture records the step without running it: the model's weights and buffers and the optimiser's state are put
back as they were before it. A replay runs the captured step again on the graph's input tensors, with the
learning-rate tensors the capture read (a graph keeps the tensors it was captured with: whatever the optimiser's
groups hold at a replay does not reach it), and writes the results into the graph's output tensors. Streams do
nothing. ``captures`` and ``replays`` count what happened.
"""
from __future__ import annotations

import contextlib

import torch

import wrnlib.engine as engine


class FakeCudaGraphs:
    def __init__(self, monkeypatch, model: torch.nn.Module | None = None):
        self.model, self.steps, self.captures, self.replays = model, [], 0, 0
        fake = self

        class Graph:
            def replay(self) -> None:
                fake.replays += 1
                step = fake.steps[-1]
                groups = step.optimizer.param_groups
                held = [group["lr"] for group in groups]
                for group, captured in zip(groups, fake.captured_lr):
                    group["lr"] = captured
                try:
                    for out, new in zip(step.outputs, step.update(*step.inputs)):
                        out.copy_(new)
                finally:
                    for group, lr in zip(groups, held):
                        group["lr"] = lr

        @contextlib.contextmanager
        def capture(graph):
            fake.captures += 1
            step = fake.steps[-1]
            state = [t for s in step.optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
            tensors = [*fake.model.parameters(), *fake.model.buffers(), *state]
            saved = [t.detach().clone() for t in tensors]
            fake.captured_lr = [group["lr"] for group in step.optimizer.param_groups]
            yield
            with torch.no_grad():
                for t, value in zip(tensors, saved):
                    t.copy_(value)

        class Stream:
            def __init__(self, device=None):
                pass

            def wait_stream(self, other) -> None:
                pass

        class Recorded(engine.GraphedStep):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                fake.steps.append(self)

        monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
        monkeypatch.setattr(torch.cuda, "graph", capture)
        monkeypatch.setattr(torch.cuda, "Stream", Stream)
        monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: Stream())
        monkeypatch.setattr(torch.cuda, "stream", lambda stream: contextlib.nullcontext())
        monkeypatch.setattr(engine, "GraphedStep", Recorded)
