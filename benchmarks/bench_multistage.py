"""Peak memory and step time against batch size: plain backprop vs apl.multistage_step.

CPU part (always): a small CNN on 64x64 images. Every (method, B) point runs in a fresh
subprocess, so that the peak resident memory of one step is not hidden by memory the allocator
kept from an earlier point; the peak is measured from after the inputs and model are allocated
(so the input images themselves are not counted), with Linux's resettable VmHWM where available.

GPU part (when CUDA and torchvision are present): torchvision's ResNet-50 (random weights), 224x224,
peak from torch.cuda.max_memory_allocated; a point that runs out of memory is recorded as "oom".

    python -m benchmarks.bench_multistage            # CPU part, and the GPU part if possible
    python -m benchmarks.bench_multistage --no-gpu

Writes benchmarks/results/multistage.json and multistage.png.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from apl.multistage import multistage_step

from . import harness

HERE = Path(__file__).resolve().parent


def make_loss():
    from apl import APLoss

    return APLoss(), "apl.APLoss()"


class Normalize(nn.Module):
    def forward(self, x):
        return F.normalize(x.float(), dim=1)


def small_cnn(dim: int = 128) -> nn.Module:
    """apl's small CNN (BatchNorm after each convolution, so that multistage's BatchNorm handling is
    in the measurement) with a linear projection and L2 normalisation."""
    from apl.nn import SmallCNN

    backbone = SmallCNN(in_channels=3, norm="batch")
    return nn.Sequential(backbone, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(backbone.out_channels, dim),
                         Normalize())


def _cpu_setup(batch: int, image: int, threads: int):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = small_cnn()
    # Gradient buffers exist before any measurement: they are the same for both methods.
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    x = torch.randn(batch, 3, image, image)
    y = torch.arange(batch) % max(batch // 4, 2)
    return model, x, y


def _cpu_step(method: str, model, x, y, loss_fn, chunk: int) -> None:
    if method == "plain":
        loss_fn(model(x), y).backward()
    else:
        multistage_step(model, x, y, loss_fn, chunk)


def _cpu_memory_point(method: str, batch: int, chunk: int, image: int, threads: int) -> dict:
    """Peak resident memory of one step; runs in its own subprocess (see run_cpu)."""
    model, x, y = _cpu_setup(batch, image, threads)
    loss_fn, _ = make_loss()
    _cpu_step(method, model, x, y, loss_fn, chunk)  # warm-up: one-off caches are not the step's
    try:  # hand freed heap memory back, so the baseline is what is live
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    exact = harness.reset_peak()
    rss0 = harness.status_kb("VmRSS") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _cpu_step(method, model, x, y, loss_fn, chunk)
    peak = harness.status_kb("VmHWM") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"method": method, "batch": batch, "peak_mib": max(peak - rss0, 0) / 1024.0, "peak_exact": exact}


def _cpu_time_points(batches: list[int], chunk: int, image: int, repeats: int, threads: int) -> list[dict]:
    """Step times; both methods alternate at each B so that load drift hits them alike."""
    loss_fn, _ = make_loss()
    out = []
    for batch in batches:
        model, x, y = _cpu_setup(batch, image, threads)
        times: dict[str, list[float]] = {"plain": [], "multistage": []}
        cpu_times: dict[str, list[float]] = {"plain": [], "multistage": []}
        for i in range(repeats + 1):  # round 0 is a warm-up
            for method in times:
                t0, c0 = time.perf_counter(), time.process_time()
                _cpu_step(method, model, x, y, loss_fn, chunk)
                if i:
                    times[method].append(time.perf_counter() - t0)
                    cpu_times[method].append(time.process_time() - c0)
        for method, ts in times.items():
            # Wall time (best of the rounds) is the number to quote on an idle machine; the CPU
            # time of this process (all its threads) suffers less from other processes' load.
            out.append({"method": method, "batch": batch, "time_s": min(ts), "time_median_s": statistics.median(ts),
                        "cpu_time_s": min(cpu_times[method])})
    return out


def _subprocess_json(extra: list[str], args, env=None):
    cmd = [sys.executable, "-m", "benchmarks.bench_multistage", *extra, "--chunk-size", str(args.chunk_size), "--image-size",
           str(args.image_size), "--repeats", str(args.repeats), "--threads", str(args.threads),
           "--batch-sizes", *map(str, args.batch_sizes)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=HERE.parent)
    if out.returncode != 0:
        raise RuntimeError(f"{extra} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_cpu(args) -> list[dict]:
    # Memory: a fresh process per point, with glibc's mmap threshold fixed (its default adapts
    # upwards and then keeps freed activations cached), so that resident memory follows the live
    # tensors. Time: one process with the default allocator.
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(1 << 20))
    mem = {}
    for batch in args.batch_sizes:
        for method in ("plain", "multistage"):
            p = _subprocess_json(["--_mem", method, str(batch)], args, env)
            mem[(method, batch)] = p
            print(f"cpu  {method:10s} B={batch:5d}  peak {p['peak_mib']:8.1f} MiB", flush=True)
    points = _subprocess_json(["--_time"], args)
    for p in points:
        p.update({k: v for k, v in mem[(p["method"], p["batch"])].items() if k.startswith("peak")})
        print(f"cpu  {p['method']:10s} B={p['batch']:5d}  {p['time_s'] * 1e3:8.1f} ms wall (best of {args.repeats}), "
              f"{p['cpu_time_s'] * 1e3:8.1f} ms cpu", flush=True)
    return points


def run_gpu(args) -> Optional[list[dict]]:
    if not torch.cuda.is_available():
        print("gpu part skipped: no CUDA device")
        return None
    try:
        import torchvision
    except ImportError:
        print("gpu part skipped: torchvision is not installed")
        return None
    dev = torch.device(args.gpu_device)
    torch.backends.cudnn.benchmark = True
    loss_fn, _ = make_loss()
    points = []
    for batch in args.gpu_batch_sizes:
        for method in ("plain", "multistage"):
            torch.manual_seed(0)
            model = torchvision.models.resnet50(weights=None)
            model.fc = Normalize()  # 2048-D global descriptors, as in retrieval
            model = model.to(dev)
            y = torch.arange(batch, device=dev) % max(batch // 4, 2)
            x = torch.randn(batch, 3, args.gpu_image_size, args.gpu_image_size, device=dev)
            for p in model.parameters():
                p.grad = torch.zeros_like(p)
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            try:
                times = []
                for i in range(args.repeats + 1):
                    torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    if method == "plain":
                        loss_fn(model(x), y).backward()
                    else:
                        multistage_step(model, x, y, loss_fn, args.gpu_chunk_size)
                    torch.cuda.synchronize()
                    if i:
                        times.append(time.perf_counter() - t0)
                p = {"method": method, "batch": batch, "time_s": statistics.median(times),
                     "peak_mib": (torch.cuda.max_memory_allocated() - base) / 2**20}
            except torch.cuda.OutOfMemoryError:
                p = {"method": method, "batch": batch, "time_s": None, "peak_mib": None, "oom": True}
            del model, x, y
            torch.cuda.empty_cache()
            shown = "OOM" if p.get("oom") else f"{p['time_s'] * 1e3:8.1f} ms  peak {p['peak_mib']:8.1f} MiB"
            print(f"gpu  {method:10s} B={batch:5d}  {shown}", flush=True)
            points.append(p)
    return points


def ratios(points: list[dict], key: str = "time_s") -> dict:
    by = {(p["method"], p["batch"]): p for p in points}
    out = {}
    for b in sorted({p["batch"] for p in points}):
        a, m = by.get(("plain", b)), by.get(("multistage", b))
        if a and m and a.get(key) and m.get(key):
            out[str(b)] = m[key] / a[key]
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = [k for k in ("cpu", "gpu") if results.get(k)]
    fig, axes = plt.subplots(len(parts), 2, figsize=(10, 3.6 * len(parts)), squeeze=False)
    for row, part in zip(axes, parts):
        pts = results[part]["points"]
        for method, style in (("plain", "o-"), ("multistage", "s-")):
            ps = [p for p in pts if p["method"] == method and p.get("time_s")]
            oom = [p["batch"] for p in pts if p["method"] == method and p.get("oom")]
            label = method + (f" (out of memory at B={', '.join(map(str, oom))})" if oom else "")
            bs = [p["batch"] for p in ps]
            row[0].plot(bs, [p["peak_mib"] for p in ps], style, label=label)
            row[1].plot(bs, [p["time_s"] * 1e3 for p in ps], style, label=label)
        title = results[part]["setup"]
        row[0].set(ylabel="peak memory of a step (MiB)", title=f"{part}: {title}")
        row[0].set_ylim(bottom=0)
        row[1].set(ylabel="step time (ms, best of the rounds)", title=f"{part}: time")
        batches = sorted({p["batch"] for p in pts})
        for ax in row:
            ax.set_xscale("log", base=2)
            ax.set_xticks(batches, [str(b) for b in batches])
            ax.set_xlabel("batch size B")
            ax.grid(alpha=0.3)
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64, 128, 256])
    ap.add_argument("--chunk-size", type=int, default=32)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--no-gpu", action="store_true")
    ap.add_argument("--gpu-batch-sizes", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    ap.add_argument("--gpu-chunk-size", type=int, default=64)
    ap.add_argument("--gpu-image-size", type=int, default=224)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--gpu-device", default="cuda", help=argparse.SUPPRESS)
    ap.add_argument("--_mem", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--_time", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args._mem:
        method, batch = args._mem
        print(json.dumps(_cpu_memory_point(method, int(batch), args.chunk_size, args.image_size, args.threads)))
        return
    if args._time:
        print(json.dumps(_cpu_time_points(args.batch_sizes, args.chunk_size, args.image_size, args.repeats, args.threads)))
        return

    _, loss_name = make_loss()
    results: dict = {"machine": harness.machine(gpu=not args.no_gpu), "loss": loss_name}
    t0 = time.time()
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    cpu = run_cpu(args)
    results["cpu"] = {
        "setup": f"small CNN, {args.image_size}px, chunk {args.chunk_size}, {args.threads} threads",
        "chunk_size": args.chunk_size, "image_size": args.image_size, "threads": args.threads,
        "points": cpu, "time_ratio_multistage_over_plain": ratios(cpu),
        "cpu_time_ratio_multistage_over_plain": ratios(cpu, "cpu_time_s"),
        # Times are only meaningful on an otherwise idle machine: the 1-minute load averages
        # before and after the CPU part are kept with them.
        "loadavg_1min_before_after": [load_before[0] if load_before else None,
                                      os.getloadavg()[0] if hasattr(os, "getloadavg") else None],
    }
    gpu = None if args.no_gpu else run_gpu(args)
    if gpu is not None:
        results["gpu"] = {
            "setup": f"ResNet-50, {args.gpu_image_size}px, chunk {args.gpu_chunk_size}, fp32",
            "device": torch.cuda.get_device_name(), "chunk_size": args.gpu_chunk_size,
            "points": gpu, "time_ratio_multistage_over_plain": ratios(gpu),
        }
    else:
        results["gpu"] = None
    results["wall_s"] = time.time() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "multistage.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, args.out / "multistage.png")
    for key in ("time_ratio_multistage_over_plain", "cpu_time_ratio_multistage_over_plain"):
        print(f"cpu {key}:", {k: round(v, 2) for k, v in results["cpu"][key].items()})
    if results["gpu"]:
        print("gpu time_ratio_multistage_over_plain:",
              {k: round(v, 2) for k, v in results["gpu"]["time_ratio_multistage_over_plain"].items()})
    print(f"wrote {args.out / 'multistage.json'} and multistage.png in {results['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
