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


def test_quantized_ap_approaches_the_exact_ap_as_bins_grow():
    """What experiments/ap_q_gap.py reports (docs/ap_q.md): on clustered batches the batch's mAP_Q is
    below the exact mAP, and the gap shrinks as M grows (M = 100 within 0.02 on the report's setting)."""
    from experiments.ap_q_gap import gap

    gaps = [gap(5, 10, 16, 1.0, m)["mean_gap"] for m in (10, 20, 100)]
    assert 0 < gaps[2] < gaps[1] < gaps[0] and gaps[2] < 0.02 and gaps[1] > 0.03


@pytest.mark.parametrize("B", [1, 255, 300, 1030, 1300, 2100])
def test_the_kernel_products_row_runs_the_products_it_names(B):
    """bench_loss's gemm_kernel row: S's packed block rows, then S x from the tiles on and above the
    diagonal alone (each multiplied twice); with H = S the result is (x x^T) x."""
    from benchmarks.kernel_products import kernel_products, packed_gram

    x = torch.randn(B, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(B))
    S = x @ x.t()
    blocks = packed_gram(x)
    assert [tuple(b.shape) for b in blocks] == [(min(256, B - i), B - i) for i in range(0, B, 256)]
    torch.testing.assert_close(torch.cat([b.reshape(-1) for b in blocks]),
                               torch.cat([S[i:i + 256, i:].reshape(-1) for i in range(0, B, 256)]))
    torch.testing.assert_close(kernel_products(x), S @ x)


@needs_cpu_kernel
def test_bench_loss_quick_run(tmp_path):
    r = subprocess.run([sys.executable, "-m", "benchmarks.bench_loss", "--quick", "--methods", "gemm,gemm_kernel,cpu_ops,cpu,cpu_stream,naive",
                        "--repeats", "1", "--out", str(tmp_path)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    data = json.loads((tmp_path / "bench_loss_cpu_quick.json").read_text())
    rows = data["rows"]
    assert {(row["method"], row["B"]) for row in rows} == {(m, B) for m in ("gemm", "gemm_kernel", "cpu_ops", "cpu", "cpu_stream", "naive") for B in (256, 512)}
    assert all(row["time_s"] > 0 for row in rows), rows
    assert (tmp_path / "bench_loss_cpu_quick.png").stat().st_size > 1000
    assert "| 512 | 512 |" in r.stdout


@needs_cpu_kernel
def test_bench_rank_quick_run(tmp_path):
    """The rank benchmark runs its methods (apl's; the peers only when APL_PEER_REPOS has them,
    else their rows say why) and writes its table; the clustered layout has the scores it claims."""
    from benchmarks.bench_rank import inputs

    r = subprocess.run([sys.executable, "-m", "benchmarks.bench_rank", "--quick", "--methods",
                        "gemm,smoothap,recall_stream,authors_smoothap", "--repeats", "1", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    rows = json.loads((tmp_path / "bench_rank_cpu_quick.json").read_text())["rows"]
    assert {(row["method"], row["B"]) for row in rows} == {(m, B) for m in ("gemm", "smoothap", "recall_stream",
                                                                           "authors_smoothap") for B in (256, 512)}
    assert all(row["time_s"] > 0 for row in rows if row["method"] != "authors_smoothap"), rows
    assert all("time_s" in row or row["error"] for row in rows)
    x, y = inputs(256, 64, 64, clustered=True)
    S = x.detach() @ x.detach().t()
    same = y[:, None] == y[None, :]
    off = ~torch.eye(256, dtype=torch.bool)
    assert 0.45 < S[same & off].mean() < 0.65 and abs(S[~same].mean()) < 0.05
    assert S[~same].max() > S[same & off].min()  # the classes' tails overlap: the loss is not 0


def test_bench_rank_rounds_give_each_ratio_a_spread(tmp_path, monkeypatch):
    """--rounds K runs the selection K times over, each row tagged with its round, into the JSON
    named by --stem; the results page takes the median and range of the per-round ratios."""
    r = subprocess.run([sys.executable, "-m", "benchmarks.bench_rank", "--rounds", "2", "--sizes", "256",
                        "--methods", "gemm,smoothap", "--layouts", "classes of 8", "--repeats", "1",
                        "--stem", "rounds", "--out", str(tmp_path)], capture_output=True, text=True, timeout=600,
                       cwd=ROOT)
    assert r.returncode == 0, r.stderr
    data = json.loads((tmp_path / "rounds.json").read_text())
    assert data["rounds"] == 2
    assert sorted((row["round"], row["method"]) for row in data["rows"]) == [
        (0, "gemm"), (0, "smoothap"), (1, "gemm"), (1, "smoothap")]
    from scripts import results_page

    ratios = results_page._round_ratios(data, "smoothap", 256)
    by = {(row["round"], row["method"]): row["time_s"] for row in data["rows"]}
    assert ratios == [by[(k, "smoothap")] / by[(k, "gemm")] for k in (0, 1)]
    monkeypatch.setattr(results_page, "BENCH", tmp_path)
    (tmp_path / "bench_rank_cpu_rounds.json").write_text(json.dumps(data))
    assert "run 2 times over" in results_page.rank_rounds_table()


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


def test_bench_rank_default_layouts_parse():
    """The layouts option is a comma-separated list: a name with a comma would break the default run."""
    from benchmarks import bench_rank

    assert all("," not in name for name in bench_rank.LAYOUTS)
    with pytest.raises(SystemExit):
        bench_rank.main(["--layouts", "classes of 9", "--sizes", "256", "--methods", "gemm"])


def test_head_check_sees_the_spread_the_loss_sees():
    """At the first step (training mode) the BatchNorm head spreads the untrained descriptors that the
    plain head leaves collapsed; in eval mode both are collapsed (untrained running statistics)."""
    import dataclasses

    from experiments.head_check import untrained
    from apl.train import TrainConfig

    cfg = TrainConfig(dataset="digits", loss="ap", dim=64, sampler="pk", batch_size=100, images_per_class=20)
    plain, bn = (untrained(dataclasses.replace(cfg, head=h), 0) for h in ("plain", "batchnorm"))
    assert plain["first_step_mean_cosine"] > 0.99 and bn["first_step_mean_cosine"] < 0.5
    assert plain["mean_cosine"] > 0.99 and bn["mean_cosine"] > 0.99


def test_step_breakdown_adds_up():
    """benchmarks/bench_step.py at a small batch that takes multistage chunks: the parts, timed one
    by one with the library's stage functions, add up to the trainer's whole step (a breakdown
    that misses a part of the step, or times one twice, fails)."""
    from benchmarks import bench_step

    row = bench_step.worker("ap", 384, repeats=3)
    assert row["chunk"] == 256 and row["loss_s"] <= row["head_loss_s"] * 1.5
    parts = sum(row[p + "_s"] for p in bench_step.PARTS if p != "loss")
    assert 0.7 < parts / row["step_s"] < 1.4, row
    assert 1.0 < row["multistage_s"] / row["plain_s"] < 3.0, row  # one more forward, not free
    assert "384" in bench_step.table([row])


_PEAK_PROBE = """
import json, os, sys, torch
from benchmarks.harness import time_and_peak
def mid():  # 24 MiB, freed, then 2 x 20 MiB live together: the step's peak is 40 MiB. Under glibc's
    # defaults the first raises the mmap threshold, the others then come from the heap and stay there
    # once freed, and a later step reuses them without growing the resident set.
    first = float(torch.ones(6 << 20).sum())
    y, z = torch.ones(5 << 20), torch.ones(5 << 20)
    return first + float(y.sum() + z.sum())
def many():  # 1 MiB temporaries one after the other: about 1 MiB live at a time
    return sum(float(torch.ones(1 << 18).sum()) for _ in range(64))
out = time_and_peak(mid if sys.argv[1] == "mid" else many, 3)
print(json.dumps(dict(out, strict_env="MALLOC_MMAP_THRESHOLD_" in os.environ)))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM and glibc's settings are Linux's")
def test_the_harness_times_with_the_default_allocator_and_measures_the_live_peak(tmp_path, monkeypatch):
    """run_worker times a step in a process with glibc's defaults (which cache freed blocks), and
    measures its peak in another with large blocks returned at once, so the peak is what the step
    holds live: not zero because glibc kept the block from the earlier steps, nor what it cached."""
    from benchmarks.harness import run_worker

    (tmp_path / "peak_probe.py").write_text(_PEAK_PROBE)
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}:{ROOT}")
    mid = run_worker("peak_probe", ["mid"], 120, what="mid")
    many = run_worker("peak_probe", ["many"], 120, what="many")
    assert "error" not in mid and "error" not in many, (mid, many)
    assert mid["timing_allocator"] == many["timing_allocator"] == "default"
    assert not mid["strict_env"] and not many["strict_env"]  # the timed process's own report
    assert mid["time_s"] > 0 and mid["repeats"] == 3
    assert 39 <= mid["peak_mb"] <= 46, mid
    assert many["peak_mb"] <= 8, many
