"""Where a training step's time goes: the batch-size study's step, broken down per loss and batch size.

The setting is the batch-size study's (experiments/batch_size.py: the glyphs with 64 images per
class, the demo's network, P x K batches, multistage chunks of 256 beyond that), so that its step
times can be read against this breakdown. Each (loss, B) point runs in a fresh process; after one
warm-up step, each part is timed on its own over the same batches, with the library's own stage
functions (apl.multistage), and the whole step (`apl.train.step.TrainStep` + the optimizer) is timed
too, as a check that the parts add up:

    load       the next batch from the trainer's loader (0 workers for the in-memory glyphs)
    stage 1    the features of the batch, chunk by chunk, without a graph
    head+loss  stage 2: the batch-coupled head and the loss, forward and backward, once per batch
    loss       the loss alone on those descriptors, forward and backward (part of head+loss)
    stage 3    each chunk's features again with a graph, and their backward
    optimizer  Adam's step
    step       TrainStep + optimizer as the trainer runs them (BatchNorm tracking included)
    plain      where the batch fits: one forward with a graph of the whole batch, head, loss and
               backward (what multistage is compared with; the paper's cost is one more forward)

    python -m benchmarks.bench_step                      # ap, smoothap, triplet-hard; B = 256 ... 4096
    python -m benchmarks.bench_step --batches 256 --losses ap --repeats 2   # a smoke run

Writes benchmarks/results/bench_step.json; prints a markdown table. CPU times are only comparable
within one run (a shared machine): read the parts as shares of the step.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from .harness import limit_memory, machine, run_worker

HERE = Path(__file__).resolve().parent
LOSSES = ("ap", "smoothap", "triplet-hard")
BATCHES = (256, 1024, 4096)
PARTS = ("load", "stage1", "head_loss", "loss", "stage3", "optimizer")
PLAIN_MAX = 1024  # plain backprop is measured up to this batch (its activations grow with B)


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _setting(loss: str, batch: int, steps: int):
    """The study's run of `loss` at `batch`, with at least `steps` batches in its first epoch."""
    from experiments.batch_size import EPOCHS, study_config

    return study_config(loss, batch, total_steps=EPOCHS * steps, lr=1e-3, seed=0, dataset="glyphs", margin=None)


def worker(loss: str, batch: int, repeats: int) -> dict:
    import torch

    from apl.multistage import _descriptors, _loss_and_gradient, _recompute_and_backward
    from apl.train.data import SeededBatches, build_datasets, build_sampler, train_loader
    from apl.train.losses import build_loss
    from apl.train.model import build_model
    from apl.train.optim import build_optimizer
    from apl.train.step import HeadLoss, TrainStep

    cfg = _setting(loss, batch, repeats + 1).validate().resolved()
    torch.manual_seed(0)
    train_set, _, channels = build_datasets(cfg)
    model = build_model(cfg, channels).train()
    loss_fn = build_loss(cfg.loss, **{k: v for k, v in cfg.loss_options().items() if k != "memory"})
    head_loss = HeadLoss(model.head, loss_fn)
    optimizer = build_optimizer(cfg, model)
    chunk_size = cfg.chunk_size or batch
    step_fn = TrainStep(model, loss_fn, torch.device("cpu"), chunk_size=cfg.chunk_size)
    batches = SeededBatches(build_sampler(cfg, train_set.targets, batch), cfg.seed)
    loader = iter(train_loader(train_set, batches, 0, 2, torch.device("cpu")))
    nothing = torch.autocast("cpu", enabled=False)

    def next_batch():
        x, y = next(loader)
        return x, torch.as_tensor(y)

    def whole_step(x, y):
        optimizer.zero_grad(set_to_none=True)
        step_fn(x, y)
        optimizer.step()

    parts = {p: [] for p in PARTS + ("step",)}
    for _ in range(repeats + 1):  # the first round warms every path up (thread pools, allocator) and is dropped
        box = {}
        parts["load"].append(_timed(lambda: box.update(b=next_batch())))
        x, y = box["b"]
        starts = list(range(0, batch, chunk_size))
        chunk = lambda s: x[s:s + chunk_size]  # noqa: E731
        optimizer.zero_grad(set_to_none=True)
        parts["stage1"].append(_timed(lambda: box.update(s1=_descriptors(model.features, chunk, starts, batch, nothing))))
        pooled, rng = box["s1"]
        parts["head_loss"].append(_timed(lambda: box.update(s2=_loss_and_gradient(head_loss, pooled, y, None, "cpu"))))
        grad = box["s2"][1]
        parts["stage3"].append(_timed(lambda: _recompute_and_backward(model.features, chunk, starts, grad, rng, False,
                                                                      nothing)))
        parts["optimizer"].append(_timed(optimizer.step))
        desc = head_loss.last_descriptors.clone().requires_grad_(True)
        parts["loss"].append(_timed(lambda: loss_fn(desc, y).backward()))
        parts["step"].append(_timed(lambda: whole_step(x, y)))
    out = {"loss": loss, "batch": batch, "chunk": cfg.chunk_size, "repeats": repeats, "threads": torch.get_num_threads(),
           "timing_allocator": "default", **{f"{p}_s": statistics.median(v[1:]) for p, v in parts.items()}}
    if batch <= PLAIN_MAX:
        def plain():
            optimizer.zero_grad(set_to_none=True)
            head_loss(model.features(x), y).backward()

        plain()
        out["plain_s"] = statistics.median(_timed(plain) for _ in range(repeats))
        out["multistage_s"] = out["stage1_s"] + out["head_loss_s"] + out["stage3_s"]
    return out


def measure(loss: str, batch: int, repeats: int, memory_gb: float, timeout: float) -> dict:
    return run_worker("benchmarks.bench_step", ["--worker", loss, str(batch), "--repeats", str(repeats),
                                                "--memory-gb", str(memory_gb)], timeout, memory=False, loss=loss,
                      batch=batch)


def table(rows: list[dict]) -> str:
    head = ("| loss | B | step s (how) | load | stage 1 | head+loss (loss alone) | stage 3 | optimizer | parts sum / step |"
            " multistage / plain |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        if "step_s" not in r:
            lines.append(f"| {r['loss']} | {r['batch']} | {r.get('error', '-')[:60]} |" + " |" * 7)
            continue
        total = r["step_s"]
        share = lambda p: f"{r[p + '_s']:.3f} ({100 * r[p + '_s'] / total:.0f}%)"  # noqa: E731
        parts_sum = sum(r[p + "_s"] for p in PARTS if p != "loss")
        ratio = f"{r['multistage_s'] / r['plain_s']:.2f}x" if "plain_s" in r else "plain not measured"
        how = f"multistage, chunks of {r['chunk']}" if r["chunk"] else "plain"
        lines.append(f"| {r['loss']} | {r['batch']} | {total:.3f} ({how}) | {share('load')} | {share('stage1')} | "
                     f"{share('head_loss')} ({r['loss_s']:.3f}) | {share('stage3')} | {share('optimizer')} | "
                     f"{parts_sum / total:.2f} | {ratio} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", nargs=2, metavar=("LOSS", "B"), help=argparse.SUPPRESS)
    p.add_argument("--losses", nargs="+", default=list(LOSSES))
    p.add_argument("--batches", type=int, nargs="+", default=list(BATCHES))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--memory-gb", type=float, default=12.0, help="address-space limit of each point's process")
    p.add_argument("--out", default=str(HERE / "results" / "bench_step.json"))
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    if a.worker:
        limit_memory(a.memory_gb)
        print(json.dumps(worker(a.worker[0], int(a.worker[1]), a.repeats)))
        return
    t0 = time.perf_counter()
    rows = []
    for batch in a.batches:
        for loss in a.losses:
            rows.append(measure(loss, batch, a.repeats, a.memory_gb, timeout=3600))
            print(f"{loss} B={batch}: " + (f"{rows[-1]['step_s']:.3f} s/step" if "step_s" in rows[-1]
                                         else rows[-1]["error"]), file=sys.stderr, flush=True)
    report = {"what": __doc__.split("\n\n")[0].replace("\n", " "), "machine": machine(), "repeats": a.repeats,
              "wall_s": round(time.perf_counter() - t0, 1), "rows": rows}
    Path(a.out).write_text(json.dumps(report, indent=1))
    print(table(rows))


if __name__ == "__main__":
    main()
