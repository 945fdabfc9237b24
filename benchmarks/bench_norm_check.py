"""Cost of the unit-norm check and of `normalize=True` next to the AP loss step.

Times forward + backward of `apl.ap_loss` on unit-norm (B, D) embeddings three ways, interleaved
in the same run: the check switched off, the check on (it runs on every call until it has warned,
so unit-norm input pays it every step), and `normalize=True` (no check; one normalisation and its
backward). CPU figures are ratios to the first, measured in the same run (shared machines are
noisy).

    python -m benchmarks.bench_norm_check            # writes benchmarks/results/norm_check.json
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import warnings
from pathlib import Path

import torch

import apl
from apl.ops import notices

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1024x512,4096x512", help="BxD pairs")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=str(RESULTS / "norm_check.json"))
    a = p.parse_args(argv)
    rows = []
    for size in a.sizes.split(","):
        B, D = (int(v) for v in size.split("x"))
        g = torch.Generator().manual_seed(0)
        x = torch.nn.functional.normalize(torch.randn(B, D, generator=g), dim=1).to(a.device)
        y = torch.randint(0, max(2, B // 8), (B,), generator=g).to(a.device)

        def step(mode: str) -> float:
            notices.reset()
            if mode != "check":  # the check is skipped once its warning was given
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    notices.warn_once("norm", "", UserWarning, 1)
            e = x.clone().requires_grad_()
            if a.device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            apl.ap_loss(e, y, normalize=mode == "normalize").backward()
            if a.device.startswith("cuda"):
                torch.cuda.synchronize()
            return time.perf_counter() - t0

        modes = ("no check", "check", "normalize")
        for m in modes:
            step(m)  # warm-up
        times = {m: [] for m in modes}
        for _ in range(a.repeats):
            for m in modes:  # interleaved, so drifting load hits all three alike
                times[m].append(step(m))
        med = {m: statistics.median(t) for m, t in times.items()}
        row = {"B": B, "D": D, "median_s": med,
               "ratio_check": med["check"] / med["no check"], "ratio_normalize": med["normalize"] / med["no check"]}
        print(f"B={B} D={D}: loss step {med['no check'] * 1e3:.1f} ms; with the check x{row['ratio_check']:.3f}; "
              f"normalize=True x{row['ratio_normalize']:.3f}")
        rows.append(row)
    notices.reset()
    result = {"device": a.device, "machine": platform.processor() or platform.machine(),
              "threads": torch.get_num_threads(), "torch": torch.__version__, "rows": rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
