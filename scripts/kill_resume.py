"""Kill `apl train` with SIGKILL at random moments, resume it each time, and check that it ends
with exactly the metrics and weights of an uninterrupted run.

    python scripts/kill_resume.py --kills 8 --workers 2 --out runs/kill_resume

Any `apl train` options after `--` replace the default (small digits) run.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_RUN = ["--dataset", "digits", "--dim", "16", "--batch-size", "128", "--epochs", "16", "--steps-per-epoch", "4",
               "--threads", "1", "--quiet"]


def _train(args: list[str], out: Path, extra: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-m", "apl", "train", *args, "--out", str(out), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def _epochs(out: Path) -> list[dict]:
    path = out / "metrics.jsonl"
    if not path.is_file():
        return []
    return [r for r in map(json.loads, path.read_text().splitlines()) if "train_loss" in r]


def run(kills: int, workers: int, out: Path, args: list[str], seed: int = 0, max_delay: float = 8.0) -> dict:
    import torch

    rng = random.Random(seed)
    ref, cut = out / "uninterrupted", out / "killed"
    for d in (ref, cut):
        if d.exists():
            import shutil

            shutil.rmtree(d)
    t0 = time.perf_counter()
    p = _train(args, ref, ["--workers", str(workers)])
    log, _ = p.communicate()
    if p.returncode:
        raise RuntimeError(f"uninterrupted run failed:\n{log}")
    duration = time.perf_counter() - t0
    done_kills, kill_times = 0, []
    while True:
        # --resume once the run folder exists (a kill before it was made left nothing to continue)
        p = _train(args, cut, ["--workers", str(workers)] + (["--resume"] if cut.exists() else []))
        if done_kills < kills:
            # somewhere in the first half of a whole run: start-up, training, evaluation or a save
            delay = rng.uniform(0.3, max(0.6, min(max_delay, duration / 2)))
            try:
                p.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                p.send_signal(signal.SIGKILL)
                p.wait()
                done_kills += 1
                kill_times.append(round(delay, 2))
                print(f"kill {done_kills} after {delay:.1f}s (epochs done: {len(_epochs(cut))})", flush=True)
                continue
        log, _ = p.communicate()
        if p.returncode:
            raise RuntimeError(f"a resume failed (after {done_kills} kills):\n{log}")
        break
    a, b = _epochs(ref), _epochs(cut)
    wa = torch.load(ref / "last.pt", weights_only=True)["model"]
    wb = torch.load(cut / "last.pt", weights_only=True)["model"]
    same_weights = all(torch.equal(wa[k], wb[k]) for k in wa)
    keys = ("epoch", "train_loss", "eval_map", "eval_p@1", "eval_p@10")
    same_metrics = [{k: r[k] for k in keys} for r in a] == [{k: r[k] for k in keys} for r in b]
    return {"kills": done_kills, "kill_after_s": kill_times, "uninterrupted_s": round(duration, 1), "epochs": len(b), "same_metrics": same_metrics,
            "same_weights": same_weights, "final_map": b[-1]["eval_map"] if b else None}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=8)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--max-delay", type=float, default=8.0, help="longest wait before a kill (s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/kill_resume")
    p.add_argument("--json", default=None, help="also write the result to this file")
    a, rest = p.parse_known_args()
    args = rest[1:] if rest[:1] == ["--"] else (rest or DEFAULT_RUN)
    result = run(a.kills, a.workers, Path(a.out), args, a.seed, a.max_delay)
    result["command"] = ["apl", "train", *args, "--workers", str(a.workers)]
    print(json.dumps(result))
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0 if result["same_metrics"] and result["same_weights"] else 1


if __name__ == "__main__":
    sys.exit(main())
