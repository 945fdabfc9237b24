"""One record per training run of a study (what was run, with what budget, and the held-out result),
and the paired comparison of two settings over the seeds they share."""
from __future__ import annotations

import math
import statistics
from typing import Optional

from ..train.config import TrainConfig

RECORD_KEYS = ("study", "setting", "loss", "batch_size", "sampler", "class_balanced", "seed", "map@r", "map", "p@1",
               "steps", "images_seen", "step_s")
# Two-sided 95% quantiles of Student's t by degrees of freedom (1-10, then the normal's).
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def record(study: str, setting: str, cfg: TrainConfig, seed: int, history: list[dict]) -> dict:
    """The record of one run from its configuration and its history (the trainer's epoch rows)."""
    last = history[-1]
    steps = int(last.get("steps", 0))
    trained = sum(r.get("time_s", 0.0) for r in history)
    rec = {"study": study, "setting": setting, "loss": cfg.loss, "batch_size": cfg.batch_size, "sampler": cfg.sampler,
           "class_balanced": bool(cfg.class_balanced), "seed": seed, "map@r": last.get("eval_map@r"),
           "map": last.get("eval_map"), "p@1": last.get("eval_p@1"), "steps": steps,
           "images_seen": int(last.get("images_seen", 0)), "step_s": round(trained / steps, 4) if steps else None}
    if last.get("diverged"):
        rec.update(status="diverged", reason=last["diverged"])
    return rec


def paired_differences(records: list[dict], a: str, b: str, metric: str = "map@r") -> dict:
    """`metric` of setting `a` minus that of setting `b`, seed by seed (the seeds both have): mean,
    standard deviation, a 95% confidence interval of the mean (Student's t) and how many seeds
    favour `a`."""
    by = {(r["setting"], r["seed"]): r[metric] for r in records if r.get(metric) is not None}
    seeds = sorted({s for (name, s) in by if name == a} & {s for (name, s) in by if name == b})
    diffs = [by[(a, s)] - by[(b, s)] for s in seeds]
    out: dict = {"a": a, "b": b, "metric": metric, "seeds": seeds, "differences": [round(d, 4) for d in diffs]}
    if not diffs:
        return out
    mean = statistics.fmean(diffs)
    std: Optional[float] = statistics.stdev(diffs) if len(diffs) > 1 else None
    out.update(mean=round(mean, 4), std=None if std is None else round(std, 4), a_better=sum(d > 0 for d in diffs))
    if std is not None:
        half = _T975.get(len(diffs) - 1, 1.96) * std / math.sqrt(len(diffs))
        out["ci95"] = [round(mean - half, 4), round(mean + half, 4)]
    return out


def paired_table(diffs: list[dict]) -> str:
    """Markdown: one line per compared pair."""
    lines = ["| compared | mean difference (held-out MAP@R) | std over seeds | 95% interval | seeds where the first is better |",
             "|---|---|---|---|---|"]
    for d in diffs:
        if "mean" not in d:
            lines.append(f"| {d['a']} - {d['b']} | no common seeds | - | - | - |")
            continue
        ci = f"[{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]" if "ci95" in d else "-"
        std = "-" if d["std"] is None else f"{d['std']:.4f}"
        lines.append(f"| {d['a']} - {d['b']} | {d['mean']:+.4f} | {std} | {ci} | {d['a_better']} of {len(d['seeds'])} |")
    return "\n".join(lines)
