"""The demo's tables: per-seed results summarised as mean and standard deviation, and Markdown."""
from __future__ import annotations

import statistics
from typing import Optional

# Held-out metrics of the tables, main one first (MAP@R: Musgrave et al., ECCV 2020).
METRICS = (("map@r", "MAP@R"), ("map", "mAP"), ("r-precision", "R-prec."), ("p@1", "P@1"), ("recall@10", "Recall@10"))


def summary(key: str, name: str, finals: list[dict], times: list[float], prefix: str = "eval_") -> dict:
    """Mean (and standard deviation over seeds) of each metric of the last epochs `finals`."""
    row = {key: name, "seeds": len(finals), "time_s": statistics.fmean(times) if times else 0.0, "runs": finals,
           "diverged": sum(1 for f in finals if f.get("diverged"))}
    for m, _ in METRICS:
        if finals and all(f"{prefix}{m}" in f for f in finals):
            values = [f[f"{prefix}{m}"] for f in finals]
            row[m] = statistics.fmean(values)
            row[m + "_std"] = statistics.stdev(values) if len(values) > 1 else None
    return row


def _cell(row: dict, m: str) -> str:
    std: Optional[float] = row.get(m + "_std")
    return f"{row[m]:.4f} ± {std:.4f}" if std is not None else f"{row[m]:.4f}"


def markdown(rows: list[dict], key: str, extra: tuple = ()) -> str:
    """A Markdown table: `key`, the held-out metrics present in every row, then `extra` columns
    ((field, title, format) of each row, '-' where a row has none) and the time per run."""
    metrics = [(m, title) for m, title in METRICS if all(m in r for r in rows)]
    head = [key] + [f"held-out {t}" for _, t in metrics] + [title for _, title, _ in extra] + ["train time per run (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [_cell(r, m) for m, _ in metrics]
        cells += ["-" if r.get(field) is None else fmt.format(r[field]) for field, _, fmt in extra]
        name = r[key] + (f" ({r['diverged']} of {r['seeds']} runs diverged)" if r.get("diverged") else "")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {r['time_s']:.0f} |")
    return "\n".join(lines)
