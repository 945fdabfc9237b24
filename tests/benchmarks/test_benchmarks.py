"""The benchmark's baselines are correct, and the benchmark script runs."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import apl
from helpers import needs_cpu_kernel, needs_cuda, random_labels, unit_rows

from benchmarks.naive_ap import naive_ap_loss, naive_per_query_ap

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=needs_cuda)])
@pytest.mark.parametrize("score_range", [(-1.0, 1.0), (-0.3, 0.6)])
def test_naive_formulation_equals_the_reference(score_range, device):
    """The paper-style B x N x M formulation the loss benchmark times (benchmarks/naive_ap.py)."""
    x, y = unit_rows(40, 6, seed=3, device=device), random_labels(40, 5, seed=3, device=device)
    y[0] = 1000  # a query without a positive
    a, ha = naive_per_query_ap(x, y, num_bins=12, score_range=score_range)
    b, hb = apl.per_query_ap(x, y, num_bins=12, score_range=score_range, backend="torch")
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    assert torch.equal(ha, hb)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    la = naive_ap_loss(xa, y, num_bins=12, score_range=score_range)
    lb = apl.ap_loss(xb, y, num_bins=12, score_range=score_range, backend="torch")
    la.backward()
    lb.backward()
    torch.testing.assert_close(la, lb, rtol=0, atol=1e-12)
    torch.testing.assert_close(xa.grad, xb.grad, rtol=0, atol=1e-10)


@needs_cpu_kernel
def test_bench_loss_quick_run(tmp_path):
    r = subprocess.run([sys.executable, "-m", "benchmarks.bench_loss", "--quick", "--methods", "gemm,cpu,cpu_stream,naive",
                        "--repeats", "1", "--out", str(tmp_path)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    data = json.loads((tmp_path / "bench_loss_cpu_quick.json").read_text())
    rows = data["rows"]
    assert {(row["method"], row["B"]) for row in rows} == {(m, B) for m in ("gemm", "cpu", "cpu_stream", "naive") for B in (256, 512)}
    assert all(row["time_s"] > 0 for row in rows), rows
    assert (tmp_path / "bench_loss_cpu_quick.png").stat().st_size > 1000
    assert "| 512 | 512 |" in r.stdout


@pytest.mark.slow
def test_bench_loader_smoke_run(tmp_path):
    out = tmp_path / "loader.json"
    r = subprocess.run([sys.executable, "-m", "benchmarks.bench_loader", "--images", "24", "--image-size", "32",
                        "--batch-size", "8", "--workers", "0", "2", "--out", str(out)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    assert [row["workers"] for row in data["training"]] == [0, 2]
    assert all(row["images_per_s"] > 0 for row in data["training"])
    assert data["same_loss_for_every_worker_count"] is True
    assert data["extraction_mixed_shapes"]["one_at_a_time"]["seconds"] > 0
