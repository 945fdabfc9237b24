"""`apl demo --study batch`: the paper's batch-size study on the many-class task. Every loss trained
with batches of B = 64 ... 4096 images for the same number of steps (a larger batch ranks more
images per step, which is what the study varies), through multistage backpropagation beyond 256
images (chunks of 256), with the held-out MAP@R and the time per step. Each (loss, B) runs in its
own process under a memory limit, so that a loss that cannot hold a batch (PML's triplet mining
enumerates B x K x B triplets) is reported as such instead of taking the study down with it.

The glyphs with 32 images per class (4768 training images) so that B = 4096 fits in the training set.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from .settings import config

BATCHES = (64, 128, 256, 512, 1024, 2048, 4096)
LOSSES = ("ap", "smoothap", "recall-at-k", "triplet", "contrastive", "multi-similarity", "fastap")
STEPS, CHUNK, GLYPHS_PER_CLASS = 30, 256, 32
MEMORY_LIMIT_GB = 12.0


# How running out of the address-space limit shows: Python's MemoryError, torch's allocator, the
# loader mapping a shared library (an import under the limit), the kernel refusing a mapping.
_OUT_OF_MEMORY = ("MemoryError", "can't allocate memory", "not enough memory", "failed to map segment",
                  "Cannot allocate memory")


def _run_one(loss: str, batch: int, steps: int, out: str, memory_gb: float) -> dict:
    """In this process, under an address-space limit: train, evaluate; a dict for the table."""
    limit = int(memory_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from ..train.loop import Trainer

    cfg = config(loss, epochs=1, seed=0, batch_size=batch, steps_per_epoch=steps, glyphs_per_class=GLYPHS_PER_CLASS,
                 chunk_size=CHUNK if batch > CHUNK else None)
    history = Trainer(cfg, out, log=lambda m: None, progress=False, overwrite=True).run()
    last = history[-1]
    return {"map@r": last["eval_map@r"], "map": last["eval_map"], "p@1": last["eval_p@1"],
            "step_s": last["time_s"] / steps}


def measure(loss: str, batch: int, steps: int, out: Path, memory_gb: float, timeout_s: float = 1800) -> dict:
    """`_run_one` in a fresh process; {"status": "ok", ...} or {"status": "memory" | "failed" | "timeout"}."""
    args = json.dumps({"loss": loss, "batch": batch, "steps": steps, "out": str(out), "memory_gb": memory_gb})
    t0 = time.perf_counter()
    try:
        r = subprocess.run([sys.executable, "-m", "apl.demo.batch_study", args], capture_output=True, text=True,
                           timeout=timeout_s, env=dict(os.environ))
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "seconds": timeout_s}
    seconds = time.perf_counter() - t0
    if r.returncode == 0:
        return {"status": "ok", "seconds": seconds, **json.loads(r.stdout.strip().splitlines()[-1])}
    tail = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit status {r.returncode}"
    memory = any(sign in r.stderr for sign in _OUT_OF_MEMORY) or r.returncode < 0
    return {"status": "memory" if memory else "failed", "seconds": seconds, "error": tail[:300]}


def run_batch_study(out: str | Path = "runs/study", losses: Sequence[str] = LOSSES, batches: Sequence[int] = BATCHES,
                    steps: int = STEPS, memory_gb: float = MEMORY_LIMIT_GB, log=print) -> list[dict]:
    """The study; writes out/batch/results.json, results.md and study_batch.png."""
    out = Path(out) / "batch"
    out.mkdir(parents=True, exist_ok=True)
    log(f"apl demo --study batch: B in {list(batches)}, {steps} steps each, glyphs with {GLYPHS_PER_CLASS} images per "
        f"class, multistage chunks of {CHUNK} beyond that, memory limit {memory_gb:g} GB per run")
    rows = []
    for loss in losses:
        for batch in batches:
            r = {"loss": loss, "batch": batch, **measure(loss, batch, steps, out / f"{loss}-B{batch}", memory_gb)}
            rows.append(r)
            if r["status"] == "ok":
                log(f"  {loss:16s} B={batch:<5d} MAP@R {r['map@r']:.4f}  mAP {r['map']:.4f}  {r['step_s']:.2f} s/step")
            else:
                log(f"  {loss:16s} B={batch:<5d} cannot run ({r['status']}): {r.get('error', '')}")
            (out / "results.json").write_text(json.dumps(rows, indent=1))
    (out / "results.md").write_text(_table(rows, losses, batches) + "\n")
    _plot(rows, losses, out / "study_batch.png")
    log("\n" + _table(rows, losses, batches))
    return rows


def _table(rows: list[dict], losses, batches) -> str:
    cell = {(r["loss"], r["batch"]): r for r in rows}
    head = ["loss"] + [f"B={b}" for b in batches]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for loss in losses:
        cells = []
        for b in batches:
            r: Optional[dict] = cell.get((loss, b))
            if r is None:
                cells.append("-")
            elif r["status"] == "ok":
                cells.append(f"{r['map@r']:.3f} ({r['step_s']:.2f} s)")
            else:
                cells.append(f"cannot run ({r['status']})")
        lines.append(f"| {loss} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _plot(rows: list[dict], losses, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.8))
    a, b = fig.subplots(1, 2)
    for loss in losses:
        ok = [r for r in rows if r["loss"] == loss and r["status"] == "ok"]
        if ok:
            a.plot([r["batch"] for r in ok], [r["map@r"] for r in ok], marker="o", label=loss)
            b.plot([r["batch"] for r in ok], [r["step_s"] for r in ok], marker="o", label=loss)
    for ax, label in ((a, "held-out MAP@R"), (b, "seconds per step (CPU)")):
        ax.set_xscale("log", base=2)
        ax.set(xlabel="batch size B", ylabel=label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("batch-size study (glyphs, same number of steps; missing points: the loss could not run)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    a = json.loads(sys.argv[1])
    print(json.dumps(_run_one(a["loss"], a["batch"], a["steps"], a["out"], a["memory_gb"])))
