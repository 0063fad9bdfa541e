"""torch.cuda's graph API stood in for on the CPU, behaving as a CUDA graph behaves for the step it captures.

A capture records the step without running it: the model's weights and buffers and the optimiser's state are put
back as they were before it. A replay runs the captured step again on the graph's input tensors and writes the
results into its output tensors, and reads the learning-rate tensors it captured (a graph keeps the addresses it
was captured with: an lr set by replacing the tensor instead of filling it would never reach the GPU's replays).
Streams do nothing. ``captures`` and ``replays`` count what happened.
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
                lrs = [group["lr"] for group in step.optimizer.param_groups]
                assert all(lr is captured for lr, captured in zip(lrs, fake.captured_lr)), "the lr tensor was replaced"
                for out, new in zip(step.outputs, step.update(*step.inputs)):
                    out.copy_(new)

        @contextlib.contextmanager
        def capture(graph):
            fake.captures += 1
            step = fake.steps[-1]
            state = [t for s in step.optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
            tensors = [*fake.model.parameters(), *fake.model.buffers(), *state]
            saved = [t.detach().clone() for t in tensors]
            yield
            fake.captured_lr = [group["lr"] for group in step.optimizer.param_groups]
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
