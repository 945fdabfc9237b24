"""docs/results.md and the README's generated blocks, from the results JSON files.

Every measured figure of the docs lives once, in its JSON under benchmarks/results/ (speed and
memory) or experiments/results/ (the demo, the studies, tuning); this script renders them. The
README's blocks sit between `<!-- results:NAME -->` and `<!-- /results:NAME -->`; prose elsewhere
names no measured figure but links here.

    python -m scripts.results_page          # rewrite docs/results.md and the README's blocks
    python -m scripts.results_page --check  # exit 1 when either is not what the JSON give (CI, a test)
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path
from typing import Callable, Optional

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks" / "results"
EXP = ROOT / "experiments" / "results"
PAGE = ROOT / "docs" / "results.md"
README = ROOT / "README.md"


def _load(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def _missing(path: Path, command: str) -> str:
    return f"Not measured yet: `{command}` writes `{path.relative_to(ROOT)}`.\n"


def _machine(m: Optional[dict]) -> str:
    if not m:
        return ""
    if isinstance(m, str):
        return f"Measured on {m}."
    cpu = m.get("cpu") or m.get("processor") or "?"
    return (f"Measured on {cpu} ({m.get('cores', m.get('cpu_count', '?'))} cores), torch {m.get('torch', '?')}"
            + (f", {m['threads']} threads" if m.get("threads") else "") + ".")


def _timing(rows: list) -> str:
    """How a benchmark's times were taken (benchmarks/harness.py), from its rows."""
    timed = [r for r in rows if r.get("time_s")]
    if timed and all(r.get("timing_allocator") == "default" for r in timed):
        return (" Times with the allocator's defaults; peak memory in a process of its own, with large"
                " blocks returned to the OS at once.")
    return (" Every step with large blocks returned to the OS at once (the older method: each large"
            " temporary paid its page faults).")


def _pm(values: list[float], digits: int = 3) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


# --- the demo ---------------------------------------------------------------------------------------

def demo_table() -> str:
    from apl.demo.comparison import COST_COLUMNS
    from apl.demo.tables import markdown

    rows = _load(EXP / "demo" / "results.json")
    if rows is None:
        return _missing(EXP / "demo" / "results.json", "apl demo --all --out experiments/results/demo")
    return markdown(rows, "loss", COST_COLUMNS) + "\n"


def demo_times() -> str:
    lines = ["| command | losses | seeds | wall time on 2 cores (min) |", "|---|---|---|---|"]
    found = False
    for folder, command in (("demo_default", "apl demo"), ("demo", "apl demo --all")):
        run = _load(EXP / folder / "run.json")
        if run is None:
            lines.append(f"| `{command}` | - | - | not measured yet |")
            continue
        found = True
        lines.append(f"| `{command}` | {', '.join(run['losses'])} | {', '.join(map(str, run['seeds']))} | "
                     f"{run['seconds'] / 60:.1f} |")
    run = _load(EXP / "demo" / "run.json") or _load(EXP / "demo_default" / "run.json")
    return "\n".join(lines) + "\n" + ("\n" + _machine(run["machine"]) + "\n" if found and run else "")


def demo_default_table() -> str:
    from apl.demo.comparison import COST_COLUMNS
    from apl.demo.tables import markdown

    rows = _load(EXP / "demo_default" / "results.json")
    if rows is None:
        return _missing(EXP / "demo_default" / "results.json", "apl demo --out experiments/results/demo_default")
    return markdown(rows, "loss", COST_COLUMNS) + "\n"


# --- the studies ------------------------------------------------------------------------------------

STUDY_COMMANDS = {"bins": "apl demo --study bins", "tie-aware": "apl demo --study tie-aware",
                  "whitening": "apl demo --study whitening", "head": "apl demo --study head",
                  "memory": "apl demo --study memory", "imbalance": "apl demo --study imbalance"}


def study_rows(name: str) -> Optional[list]:
    return _load(EXP / "studies" / name / "results.json")


def study_table(name: str) -> str:
    from apl.demo.records import paired_table
    from apl.demo.tables import markdown

    rows = study_rows(name)
    if rows is None:
        return _missing(EXP / "studies" / name / "results.json", STUDY_COMMANDS[name] + " --out experiments/results/studies")
    text = markdown(rows, "setting") + "\n"
    paired = _load(EXP / "studies" / name / "paired.json")
    if paired:
        text += "\nPaired differences over the seeds (the same seed: the same initialisation and batches):\n\n"
        text += paired_table(paired) + "\n"
    return text


def batch_size_table() -> str:
    from experiments.batch_size import report_text

    report = _load(EXP / "batch_size.json")
    if report is None or not report["runs"]:
        return _missing(EXP / "batch_size.json", "python -m experiments.batch_size")
    if not any(r["phase"] == "final" for r in report["runs"]):
        from experiments.batch_size import time_text, tuning_text

        return ("The final runs have not been made yet (`python -m experiments.batch_size` resumes the study); "
                "its tuning phase ran:\n\n" + tuning_text(report) + "\n" + time_text(report["runs"]))
    plot = EXP / "batch_size.png"
    return report_text(report) + (f"\n![held-out MAP@R against the batch size, both budgets](../experiments/results/"
                                  f"{plot.name})\n" if plot.is_file() else "")


# --- AP_Q against the exact AP ------------------------------------------------------------------------

def ap_q_gap_table() -> str:
    data = _load(EXP / "ap_q_gap.json")
    if data is None or "batches_above" not in data["rows"][0]:
        return _missing(EXP / "ap_q_gap.json", "python -m experiments.ap_q_gap")
    lines = ["| data | exact mAP | M | mean exact - AP_Q | batches with AP_Q below / above | smallest batch gap | "
             "queries with AP_Q above | largest query gap |", "|---|---|---|---|---|---|---|---|"]
    for r in data["rows"]:
        what = (f"clustered, {r['classes']} x {r['per_class']}, D {r['dim']}, spread {r['spread']}"
                if r["data"] == "clustered" else f"{r['data']}, {r['split']}")
        lines.append(f"| {what} | {r['exact_map']:.3f} | {r['num_bins']} | {r['mean_gap']:+.4f} | "
                     f"{r['batches_below']:.0%} / {r['batches_above']:.0%} | {r['min_batch_gap']:+.2g} | {r['queries_above']:.0%} | "
                     f"{r['max_query_gap']:.3f} |")
    return f"{data['draws']} batches per row.\n\n" + "\n".join(lines) + "\n"


# --- tuning ---------------------------------------------------------------------------------------------

def tuning_table() -> str:
    data = _load(EXP / "tune_losses.json")
    if data is None:
        return _missing(EXP / "tune_losses.json", "python -m experiments.tune_losses")
    lines = ["| loss | learning rate | option | validation MAP@R |", "|---|---|---|---|"]
    for loss, c in data["chosen"].items():
        option = ", ".join(f"{k} {v}" for k, v in c.items() if k not in ("lr", "validation_map@r"))
        lines.append(f"| {loss} | {c['lr']:g} | {option} | {c['validation_map@r']:.3f} |")
    return f"{data['protocol']}; {data['epochs']} epochs.\n\n" + "\n".join(lines) + "\n"


def backbone_lr_table() -> str:
    data = _load(EXP / "backbone_lr.json")
    if data is None:
        return _missing(EXP / "backbone_lr.json", "python -m experiments.tune_backbone_lr")
    rates = sorted({float(k) for s in data["summary"].values() for k in s["mean_map@r_by_lr"]}, reverse=True)
    lines = ["| backbone | " + " | ".join(f"lr {r:g}" for r in rates) + " | best |", "|---|" + "---|" * (len(rates) + 1)]
    for backbone, s in data["summary"].items():
        by = {float(k): v for k, v in s["mean_map@r_by_lr"].items()}
        cells = [f"{by[r]:.3f}" if r in by else "-" for r in rates]
        diverged = {float(r["lr"]) for r in data["runs"] if r["backbone"] == backbone and r.get("diverged")}
        cells = [c + (" (diverged)" if r in diverged else "") for c, r in zip(cells, rates)]
        lines.append(f"| {backbone} | " + " | ".join(cells) + f" | {float(s['best_lr']):g} |")
    return ("Validation MAP@R (glyphs-val, mean over seeds); a diverged run scores 0.\n\n" + "\n".join(lines) + "\n")


# --- speed and memory ----------------------------------------------------------------------------------

def _ratio_rows(rows: list, methods: list, key: dict, base: str = "gemm") -> dict:
    """(B, method) -> time / time of `base` at the same B (and the other `key` fields)."""
    out = {}
    for r in rows:
        if all(r.get(k) == v for k, v in key.items()):
            out[(r["B"], r["method"])] = r
    ratios = {}
    for (b, m), r in out.items():
        if m in methods and (b, base) in out and r.get("time_s"):
            ratios[(b, m)] = (r["time_s"] / out[(b, base)]["time_s"], r.get("peak_mb"))
    return ratios


def loss_speed_table() -> str:
    data = _load(BENCH / "bench_loss_cpu.json")
    if data is None:
        return _missing(BENCH / "bench_loss_cpu.json", "python -m benchmarks.bench_loss")
    methods = ["gemm_kernel", "cpu_ops", "cpu", "cpu_stream", "torch", "naive"]
    names = {"gemm_kernel": "the fused kernel's own products alone (its design's floor)",
             "cpu_ops": "fused kernel, its two ops alone", "cpu": "fused kernel (`APLoss`)",
             "cpu_stream": "streaming", "torch": "pure-PyTorch reference",
             "naive": "the paper's B x N x M formulation"}
    ratios = _ratio_rows(data["rows"], methods, {"D": 512})
    batches = sorted({b for b, _ in ratios})
    lines = ["| AP_Q, D = 512 | " + " | ".join(f"B={b}" for b in batches) + " |", "|---|" + "---|" * len(batches)]
    for m in methods:
        cells = [f"{ratios[(b, m)][0]:.2f}x, {ratios[(b, m)][1]:.0f} MB" if (b, m) in ratios else "-" for b in batches]
        lines.append(f"| {names[m]} | " + " | ".join(cells) + " |")
    return ("Forward + backward as a multiple of the two matrix products (S = E E^T, then a B x B by B x D "
            "product) timed in the same run, and peak memory above the inputs.\n\n" + "\n".join(lines) + "\n\n"
            + _machine(data.get("machine")) + _timing(data["rows"]) + "\n")


def rank_speed_table() -> str:
    data = _load(BENCH / "bench_rank_cpu.json")
    if data is None:
        return _missing(BENCH / "bench_rank_cpu.json", "python -m benchmarks.bench_rank")
    methods = ["smoothap", "smoothap_stream", "recall", "recall_stream", "authors_smoothap", "pml_smoothap",
               "authors_recall"]
    lines = []
    for per_class, clustered in sorted({(r["per_class"], r["clustered"]) for r in data["rows"]}):
        ratios = _ratio_rows(data["rows"], methods, {"per_class": per_class, "clustered": clustered})
        batches = sorted({b for b, _ in ratios})
        if not batches:
            continue
        lines += [f"\nClasses of {per_class}, {'clustered' if clustered else 'random'} embeddings:\n",
                  "| method | " + " | ".join(f"B={b}" for b in batches) + " |", "|---|" + "---|" * len(batches)]
        for m in methods:
            errs = {r["B"]: r.get("error") for r in data["rows"] if r["method"] == m and r["per_class"] == per_class
                    and r["clustered"] == clustered and r.get("error")}
            cells = []
            for b in batches:
                if (b, m) in ratios:
                    cells.append(f"{ratios[(b, m)][0]:.2f}x")
                else:
                    cells.append("out of memory" if errs.get(b) and "memory" in errs[b] else "-")
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return ("Forward + backward of the rank surrogates as a multiple of the two matrix products.\n"
            + "\n".join(lines) + "\n\n" + _machine(data.get("machine")) + _timing(data["rows"]) + "\n")


def _round_ratios(data: dict, method: str, B: int) -> list:
    """method / gemm time of each round at B (classes of 8, random embeddings), in round order."""
    by = {(r.get("round", 0), r["method"]): r for r in data["rows"]
          if r["B"] == B and r["per_class"] == 8 and not r["clustered"] and r.get("time_s")}
    return [by[(k, method)]["time_s"] / by[(k, "gemm")]["time_s"] for k in sorted({k for k, _ in by})
            if (k, method) in by and (k, "gemm") in by]


def rank_rounds_table() -> str:
    data = _load(BENCH / "bench_rank_cpu_rounds.json")
    if data is None:
        return _missing(BENCH / "bench_rank_cpu_rounds.json", "python -m benchmarks.bench_rank --rounds 5 --sizes "
                        "1024,2048,4096 --methods gemm,smoothap,recall --layouts 'classes of 8' --stem bench_rank_cpu_rounds")
    batches = sorted({r["B"] for r in data["rows"]})
    lines = ["| method | " + " | ".join(f"B={b}" for b in batches) + " |", "|---|" + "---|" * len(batches)]
    for m in ("smoothap", "recall"):
        cells = []
        for b in batches:
            v = _round_ratios(data, m, b)
            cells.append(f"{statistics.median(v):.2f}x ({min(v):.2f} - {max(v):.2f})" if v else "-")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return (f"The fused kernels, classes of 8, run {data.get('rounds', 1)} times over (each time the two matrix "
            "products, then the kernels, each in a fresh process): the median ratio and its range. One run's "
            "ratio moves with the shared machine's load between its processes.\n\n" + "\n".join(lines) + "\n\n"
            + _machine(data.get("machine")) + _timing(data["rows"]) + "\n")


def multistage_table() -> str:
    data = _load(BENCH / "multistage.json")
    if data is None:
        return _missing(BENCH / "multistage.json", "python -m benchmarks.bench_multistage")
    lines = [f"CPU: {data['cpu']['setup']}.\n", "| B | plain: time (s) | multistage: time (s) | ratio | plain: peak (MiB) | "
             "multistage: peak (MiB) |", "|---|---|---|---|---|---|"]
    pts = {(p["method"], p["batch"]): p for p in data["cpu"]["points"]}
    for b in sorted({p["batch"] for p in data["cpu"]["points"]}):
        a, m = pts.get(("plain", b)), pts.get(("multistage", b))
        if a and m:
            lines.append(f"| {b} | {a['time_s']:.3f} | {m['time_s']:.3f} | {m['time_s'] / a['time_s']:.2f} | "
                         f"{a['peak_mib']:.0f} | {m['peak_mib']:.0f} |")
    return "\n".join(lines) + "\n\n" + _machine(data.get("machine")) + "\n"


def step_breakdown_table() -> str:
    from benchmarks.bench_step import table

    data = _load(BENCH / "bench_step.json")
    if data is None:
        return _missing(BENCH / "bench_step.json", "python -m benchmarks.bench_step")
    return ("A training step of the batch-size study's setting, part by part (seconds, median of "
            f"{data['repeats']}; the share of the whole step in brackets).\n\n" + table(data["rows"]) + "\n\n"
            + step_summary(data["rows"]) + "\n\n" + _machine(data.get("machine")) + "\n")


def step_summary(rows: list) -> str:
    """What the step breakdown says, in numbers: the network's share and the loss's time at the
    largest batch, and multistage against plain where plain was measured."""
    ok = [r for r in rows if "step_s" in r]
    if not ok:
        return "No point was measured."
    top = max(r["batch"] for r in ok)
    lines = [f"- At B = {top}, per loss: the network (stages 1 and 3) "
             + ", ".join(f"{r['loss']} {100 * (r['stage1_s'] + r['stage3_s']) / r['step_s']:.0f}%"
                         for r in ok if r["batch"] == top)
             + "; the loss alone " + ", ".join(f"{r['loss']} {r['loss_s']:.2f} s" for r in ok if r["batch"] == top)
             + " of a step of " + ", ".join(f"{r['step_s']:.2f} s" for r in ok if r["batch"] == top) + "."]
    ratios = [r["multistage_s"] / r["plain_s"] for r in ok if "plain_s" in r]
    if ratios:
        lines.append(f"- Multistage against plain backprop: {min(ratios):.2f}x to {max(ratios):.2f}x "
                     f"(B = {', '.join(str(b) for b in sorted({r['batch'] for r in ok if 'plain_s' in r}))}; "
                     "the paper's cost: about 1.33x).")
    return "\n".join(lines)


def amp_table() -> str:
    data = _load(BENCH / "amp_cpu.json")
    if data is None:
        return _missing(BENCH / "amp_cpu.json", "python -m benchmarks.bench_amp_cpu")
    lines = ["| --amp | step (s) | x float32 | native on this CPU |", "|---|---|---|---|"]
    for r in data["rows"]:
        lines.append(f"| {r['amp']} | {r['step_s']:.3f} | {r['ratio_to_float32']:.2f} | {r.get('native', '-')} |")
    return "\n".join(lines) + "\n\n" + _machine(data.get("machine")) + "\n"


def memory_table() -> str:
    data = _load(BENCH / "bench_memory.json")
    if data is None:
        return _missing(BENCH / "bench_memory.json", "python -m benchmarks.bench_memory")
    sizes = sorted({r["N"] for r in data["rows"]})
    methods = list(dict.fromkeys(r["method"] for r in data["rows"]))
    by = {(r["method"], r["N"]): r for r in data["rows"]}
    lines = ["| method | " + " | ".join(f"N={n}" for n in sizes) + " |", "|---|" + "---|" * len(sizes)]
    for m in methods:
        cells = [f"{by[(m, n)]['ratio_to_bound']:.2f}x" if (m, n) in by and by[(m, n)].get("ratio_to_bound") else "-"
                 for n in sizes]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return (f"A loss step on a batch of B = {data['B']}, D = {data['D']} ranked against the batch and a cross-batch "
            "memory of N past descriptors, as a multiple of the two matrix products of the same shapes.\n\n"
            + "\n".join(lines) + "\n\n" + _machine(f"{data['machine']}, torch {data['torch']}, {data['threads']} threads") + "\n")


def loader_table() -> str:
    data = _load(BENCH / "bench_loader.json")
    if data is None:
        return _missing(BENCH / "bench_loader.json", "python -m benchmarks.bench_loader")
    lines = ["| workers | training images/s | loader alone, images/s | training loss |", "|---|---|---|---|"]
    for r in data["training"]:
        lines.append(f"| {r['workers']} | {r['images_per_s']:.1f} | {r['loader_only_images_per_s']:.0f} | {r['train_loss']:.6f} |")
    x = data["extraction_mixed_shapes"]
    return ("\n".join(lines) + f"\n\nExtraction of mixed shapes: {x['grouped_by_shape_batch_64']['images_per_s']:.0f} "
            f"images/s grouped by shape, {x['one_at_a_time']['images_per_s']:.0f} one at a time.\n\n"
            + _machine(data.get("machine")) + "\n")


def norm_check_table() -> str:
    data = _load(BENCH / "norm_check.json")
    if data is None:
        return _missing(BENCH / "norm_check.json", "python -m benchmarks.bench_norm_check")
    lines = ["| B | D | check on | `normalize=True` |", "|---|---|---|---|"]
    for r in data["rows"]:
        lines.append(f"| {r['B']} | {r['D']} | {r['ratio_check']:.2f}x | {r['ratio_normalize']:.2f}x |")
    return "\n".join(lines) + "\n"


def head_check_table() -> str:
    data = _load(EXP / "head_check.json")
    if data is None:
        return _missing(EXP / "head_check.json", "python -m experiments.head_check")

    def cell(d: dict) -> str:
        return f"{d['mean']:.3f}" + (f" ± {d['std']:.3f}" if d.get("std") else "")

    lines = ["| data | head | first-batch cosine | MAP@R untrained | MAP@R after AP_Q |", "|---|---|---|---|---|"]
    for r in data["rows"]:
        lines.append(f"| {r['dataset']} | {r['head']} | {cell(r['first_step_mean_cosine'])} | "
                     f"{cell(r['untrained_map@r'])} | {cell(r['ap_map@r'])} |")
    return f"`python -m experiments.head_check`, seeds {data['seeds']}:\n\n" + "\n".join(lines) + "\n"


def robustness_text() -> str:
    data = _load(EXP / "kill_resume.json")
    if data is None:
        return _missing(EXP / "kill_resume.json", "python scripts/kill_resume.py --json experiments/results/kill_resume.json")
    same = "the same metrics and weights" if data["same_metrics"] and data["same_weights"] else "DIFFERENT results"
    return (f"A run killed with SIGKILL {data['kills']} times at random moments and resumed each time ended with "
            f"{same} as the uninterrupted run ({data['epochs']} epochs).\n")


# --- what the paper claims ------------------------------------------------------------------------------

def _by_setting(name: str) -> dict:
    return {r["setting"]: r for r in (study_rows(name) or [])}


def _cell(row: Optional[dict]) -> str:
    if not row:
        return "-"
    std = row.get("map@r_std")
    return f"{row['map@r']:.3f}" + (f" ± {std:.3f}" if std is not None else "")


def claims_table() -> str:
    """Each claim of the paper that the studies test, what we measured (held-out MAP@R, mean ± std over
    seeds) and whether it agrees; the verdicts are computed from the numbers, not typed."""
    lines = ["| the paper's claim | what we measured (held-out MAP@R, glyphs) | agrees? |", "|---|---|---|"]

    bins = _by_setting("bins")
    if bins:
        best = max(bins.values(), key=lambda r: r["map@r"])
        m20 = bins.get("M=20")
        within = m20 and m20["map@r"] + (m20.get("map@r_std") or 0) + (best.get("map@r_std") or 0) >= best["map@r"]
        lines.append("| the loss is not sensitive to the number of bins over a range; M = 20 is used | "
                     + ", ".join(f"{k}: {_cell(v)}" for k, v in bins.items())
                     + f" | {'yes: M = 20 is within the spread of the best' if within else 'no: M = 20 is below the best beyond the spread'} "
                     f"({best['setting']} best here) |")
    tie = _by_setting("tie-aware")
    if tie and len(tie) == 2:
        q, t = tie.get("AP_Q"), tie.get("AP_T (tie-aware)")
        d = t["map@r"] - q["map@r"]
        spread = (q.get("map@r_std") or 0) + (t.get("map@r_std") or 0)
        lines.append(f"| the tie-aware AP_T trains slightly better than AP_Q | AP_Q {_cell(q)}, AP_T {_cell(t)} | "
                     f"{'yes' if d > spread else 'not shown: within the spread of the seeds' if d > -spread else 'no'} "
                     f"({d:+.3f}) |")
    white = _by_setting("whitening")
    if white:
        off, on = white.get("off"), white.get("on")
        d = on["map@r"] - off["map@r"]
        spread = (on.get("map@r_std") or 0) + (off.get("map@r_std") or 0)
        lines.append(f"| PCA-whitening of the descriptors at test time helps | off {_cell(off)}, on {_cell(on)} | "
                     f"{'yes' if d > spread else 'not shown: within the spread' if d > -spread else 'no'} ({d:+.3f}; "
                     "our network already ends in a learned whitening) |")
    head = _by_setting("head")
    if head:
        lines.append("| (apl's, not the paper's) a BatchNorm before the whitening lets the head train from scratch | "
                     + ", ".join(f"{k}: {_cell(v)}" for k, v in head.items()) + " | see [training.md](training.md#the-descriptor-head) |")
    memory = _by_setting("memory")
    if memory:
        lines.append("| (a later paper's) ranking against a cross-batch memory of past descriptors helps | "
                     + ", ".join(f"{k}: {_cell(v)}" for k, v in memory.items()) + " | "
                     + ("yes" if max(memory.values(), key=lambda r: r["map@r"])["setting"] != "N=0" else "not shown")
                     + " |")
    paired = _load(EXP / "studies" / "imbalance" / "paired.json")
    if paired:
        p = paired[0]
        lo, hi = p.get("ci95", [None, None])
        verdict = ("yes" if lo is not None and lo > 0 else "no: the weights lower it" if hi is not None and hi < 0
                   else "not shown: the interval includes 0")
        lines.append(f"| class-balanced query weights help on imbalanced classes (about +2% mAP) | class-balanced "
                     f"minus uniform, random batches on long-tailed glyphs: {p['mean']:+.4f} "
                     + (f"(95% interval [{lo:+.4f}, {hi:+.4f}], " if lo is not None else "(")
                     + f"{p['a_better']} of {len(p['seeds'])} seeds better) | {verdict} |")
    bs = _load(EXP / "batch_size.json")
    if bs and any(r["phase"] == "final" for r in bs["runs"]):
        from experiments.batch_size import batch_gain, claim_verdict, final_values

        triplet = next((loss for loss in bs["losses"] if loss.startswith("triplet")), None)
        for budget, what in (("steps", "equal steps, as the paper"), ("images", "equal images seen")):
            cells = [f"{loss} " + " / ".join(_pm(final_values(bs["runs"], loss, b, budget)) for b in bs["batches"])
                     for loss in bs["losses"]]
            gains = [batch_gain(bs["runs"], loss, bs["batches"], budget) for loss in ("ap", triplet)]
            lines.append(f"| AP improves with the batch, up to about 4096; a triplet loss with hard mining does not "
                         f"({what}; our triplet mines semi-hard negatives, batch-hard mining collapsed) | "
                         f"B = {' / '.join(map(str, bs['batches']))}: " + "; ".join(cells)
                         + f" | {claim_verdict(*gains, triplet)}; [the study](#batch-size) |")
    else:
        tuned = " (its tuning phase ran: [the study](#batch-size))" if bs and bs["runs"] else ""
        lines.append("| AP improves with the batch, up to about 4096; a triplet loss with hard mining does not | "
                     f"not measured yet{tuned} (`python -m experiments.batch_size`, hours on 2 cores) | - |")
    if not memory:
        lines.append("| (a later paper's) ranking against a cross-batch memory of past descriptors helps | "
                     "not measured yet (`apl demo --study memory`) | - |")
    return "\n".join(lines) + "\n"


def speed_headline() -> str:
    """The README's speed table: the fused kernels at the largest B measured, as a multiple of the
    two matrix products, with the other implementations."""
    lines = ["| loss | apl, fused kernel | apl, streaming | other implementations |", "|---|---|---|---|"]
    loss = _load(BENCH / "bench_loss_cpu.json")
    if loss:
        r = _ratio_rows(loss["rows"], ["cpu_ops", "cpu", "cpu_stream", "naive"], {"D": 512})
        b = max(b for b, _ in r)
        fmt = lambda m: f"{r[(b, m)][0]:.2f}x, {r[(b, m)][1]:.0f} MB" if (b, m) in r else "-"  # noqa: E731
        fused = fmt("cpu") if (b, "cpu_ops") not in r else f"{fmt('cpu_ops')} (through `APLoss`, with its L2 normalisation: {fmt('cpu')})"
        lines.append(f"| AP_Q, M = 20 (B = {b}) | {fused} | {fmt('cpu_stream')} | the paper's B x N x M formulation: "
                     f"{fmt('naive')} |")
    rank = _load(BENCH / "bench_rank_cpu.json")
    if rank:
        r = _ratio_rows(rank["rows"], ["smoothap", "smoothap_stream", "recall", "recall_stream"],
                        {"per_class": 8, "clustered": False})
        b = max(b for b, m in r if m == "smoothap")
        rounds = _load(BENCH / "bench_rank_cpu_rounds.json")
        for name, m in (("Smooth-AP", "smoothap"), ("Recall@k", "recall")):
            cells = [f"{r[(b, k)][0]:.2f}x, {r[(b, k)][1]:.0f} MB" if (b, k) in r else "-" for k in (m, m + "_stream")]
            spread = _round_ratios(rounds, m, b) if rounds else []
            if spread:
                cells[0] += (f" (median of {len(spread)} runs: {statistics.median(spread):.2f}x, "
                             f"{min(spread):.2f} - {max(spread):.2f})")
            lines.append(f"| {name} (B = {b}) | {cells[0]} | {cells[1]} | [results](docs/results.md#rank-surrogates) |")
    machines = {_machine(d["machine"]) for d in (loss, rank) if d and d.get("machine")}
    return "\n".join(lines) + "\n" + "".join(f"\n{m}\n" for m in sorted(machines))


# --- the page --------------------------------------------------------------------------------------------

SECTIONS: list[tuple[str, Callable[[], str]]] = [
    ("The demo: every loss on 150 unseen classes (`apl demo --all`)", demo_table),
    ("The demo's default run (`apl demo`)", demo_default_table),
    ("How long the demo takes", demo_times),
    ("What the paper claims, and what we measured", claims_table),
    ("Study: number of bins", lambda: study_table("bins")),
    ("Study: tie-aware AP", lambda: study_table("tie-aware")),
    ("Study: whitening at test time", lambda: study_table("whitening")),
    ("Study: the descriptor head", lambda: study_table("head") + "\n" + head_check_table()),
    ("Study: cross-batch memory", lambda: study_table("memory")),
    ("Study: class imbalance", lambda: study_table("imbalance")),
    ("Batch size", batch_size_table),
    ("AP_Q against the exact AP", ap_q_gap_table),
    ("Hyper-parameters chosen on the validation split", tuning_table),
    ("Learning rate of the ResNet backbones", backbone_lr_table),
    ("Speed: the AP_Q loss", loss_speed_table),
    ("Rank surrogates", rank_speed_table),
    ("Rank surrogates: the spread over runs", rank_rounds_table),
    ("Multistage backpropagation", multistage_table),
    ("Where a training step's time goes", step_breakdown_table),
    ("Cross-batch memory", memory_table),
    ("Loader throughput", loader_table),
    ("The unit-norm check", norm_check_table),
    ("Mixed precision on the CPU", amp_table),
    ("Kill and resume", robustness_text),
]
README_BLOCKS = {"demo": demo_table, "demo-times": demo_times, "claims": claims_table, "speed": speed_headline}


def page() -> str:
    parts = ["# Results\n",
             "Every measured figure of apl's docs, rendered from its results JSON by `python -m "
             "scripts.results_page` (CI checks that this page is what the JSON give). The commands that "
             "measure them, and what each measures: [benchmarks.md](benchmarks.md); the studies: "
             "[losses.md](losses.md#studies).\n"]
    for title, render in SECTIONS:
        parts.append(f"## {title}\n\n{render()}")
    return "\n".join(parts)


def readme(text: str) -> str:
    """The README with its generated blocks rendered again."""
    for name, render in README_BLOCKS.items():
        pattern = re.compile(rf"(<!-- results:{name} -->\n).*?(<!-- /results:{name} -->)", re.S)
        if not pattern.search(text):
            raise ValueError(f"README.md has no block <!-- results:{name} --> ... <!-- /results:{name} -->")
        body = render().replace("](training.md", "](docs/training.md")
        body = body.replace("](#batch-size)", "](docs/results.md#batch-size)")
        text = pattern.sub(lambda m: m.group(1) + body + m.group(2), text)
    return text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 when docs/results.md or the README's blocks are stale")
    a = p.parse_args(argv)
    want_page, want_readme = page(), readme(README.read_text())
    if a.check:
        stale = [str(f.relative_to(ROOT)) for f, want in ((PAGE, want_page), (README, want_readme))
                 if not f.is_file() or f.read_text() != want]
        if stale:
            print(f"stale: {', '.join(stale)}; run python -m scripts.results_page", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(want_page)
    README.write_text(want_readme)
    print(f"wrote {PAGE.relative_to(ROOT)} and the README's blocks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
