"""The throughput benchmark, run for real on the CPU through the command line."""
from __future__ import annotations

import json

import pytest

from wrnlib.cli import main
from wrnlib.model import WideResNet, count_forward_flops


def test_bench_writes_json_and_markdown(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["bench", "--depth", "10", "--width", "1", "--batch-size", "32", "--steps", "2", "--warmup", "1",
                 "--modes", "fp32,bf16", "--device", "cpu", "--out", str(out)]) == 0
    data = json.loads((out / "bench.json").read_text())
    flops = count_forward_flops(WideResNet(10, 1))
    assert [r["mode"] for r in data["results"]] == ["fp32", "bf16"]
    for r in data["results"]:
        assert r["train_images_per_s"] > 0 and r["inference_images_per_s"] > 0
        assert r["train_tflops"] == pytest.approx(3 * flops * r["train_images_per_s"] / 1e12)
        assert r["epoch_time_s"] == pytest.approx(45_000 / r["train_images_per_s"])
    assert "| fp32 |" in (out / "bench.md").read_text()
    assert data["env"]["torch"]
