"""The paper's batch-size study, made to answer its question: does AP_Q improve as the batch grows
when a triplet loss with hard-negative mining does not (so that the gain is not "a bigger batch")?

Setting: the glyphs with 64 images per class (9,536 training images of 149 classes, so that B = 4096
holds no image twice), the demo's network, P x K batches (K = 8, or more per class when B / 8 exceeds
the 149 classes), Adam with a cosine schedule, multistage backpropagation in chunks of 256 beyond
that; held-out MAP@R of the 150 unseen classes. Losses: apl's AP_Q ("ap"), apl's Smooth-AP
("smoothap") and PML's triplet loss with hard-negative mining in its batch form, the paper's
baseline. Its first form, batch-hard mining ("triplet-hard": each anchor's farthest positive and
closest negative), collapsed in tuning at B = 256 and 1024 for every rate and margin of the grid
(docs/losses.md#studies), so the study's triplet is the semi-hard batch form that trains at every B
("triplet-semihard": each anchor's closest positive and the closest negative farther than it).
B = 64, 256, 1024, 4096.

Two ways of counting the budget, both reported:
- equal images: every run sees the same number of images (IMAGES), so B = 64 takes 64 times the
  steps of B = 4096; long enough that B = 64 has converged (its held-out curve is flat at the end:
  the records keep the curve);
- equal steps: every run takes STEPS steps, what the paper varies; a larger batch sees more images.

Learning rates (and the triplet margin) are chosen per loss and batch size on the validation split
of the *training* classes ("glyphs-val": a quarter of them held out; the unseen classes are never
looked at), at the equal-images budget with one seed: the rate of the grid LR_FACTORS x the loss's
demo rate with the best validation MAP@R; where the best is on an edge of the grid, the grid grows
by a factor of 4 past that edge (at most MAX_GRID_EXTENSIONS times; a best still on an edge after
that is flagged in the tuning table). The same rate is then used for
both budgets (the equal-steps runs are not tuned again). Each run is a fresh process under a memory limit, so that a loss that
cannot hold a batch is reported with its memory figure rather than taking the study down.

    python -m experiments.batch_size                  # the whole study: hours on 2 cores (see the README)
    python -m experiments.batch_size --phase tune     # only the learning-rate choice
    python -m experiments.batch_size --quick OUT.json # plumbing: tiny budgets, a few minutes on 2 cores
Results: experiments/results/batch_size.json (runs already there are kept, so the study resumes) and
its plot batch_size.png; the tables are in docs/results.md (scripts/results_page.py, from the JSON).
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

RESULTS = Path(__file__).resolve().parent / "results"
BATCHES = (64, 256, 1024, 4096)
LOSSES = ("ap", "smoothap", "triplet-semihard")
SEEDS = (0, 1, 2)
IMAGES = 2 ** 16          # equal-images budget: 1024 steps at B = 64, 16 at B = 4096
STEPS = 32                # equal-steps budget: at B = 4096 twice the equal-images one
EPOCHS = 8                # evaluations along a run (the curve that shows convergence)
GLYPHS_PER_CLASS, CHUNK, K = 64, 256, 8
LR_FACTORS = (0.25, 1.0, 4.0)
# A best rate on an edge of the grid is not a choice: the grid grows by a factor of 4 past that edge,
# at most this many times (AP_Q at B = 4096 was best at the top of LR_FACTORS).
MAX_GRID_EXTENSIONS = 2
# A run below this validation MAP@R has collapsed (an untrained network scores 0.029 on the unseen glyphs).
COLLAPSED = 0.1
MARGINS = (0.1, 0.2, 0.4)  # the triplet losses, tuned at MARGIN_BATCH
MARGIN_LOSSES, MARGIN_BATCH = ("triplet-hard", "triplet-semihard"), 256
MEMORY_LIMIT_GB = 12.0
# The demo's learning rate of each loss (apl/demo/settings.py TUNED), the centre of the grid;
# the mined triplet losses are not in the demo, so they start from the triplet loss's.
BASE_LR = {"ap": 0.016, "smoothap": 0.064, "triplet-hard": 0.064, "triplet-semihard": 0.064}
_OUT_OF_MEMORY = ("MemoryError", "can't allocate memory", "not enough memory", "failed to map segment",
                  "Cannot allocate memory")


def steps_for(batch: int, budget: str, images: int, steps: int) -> int:
    return max(EPOCHS, images // batch) if budget == "images" else steps


def study_config(loss: str, batch: int, total_steps: int, lr: float, seed: int, dataset: str, margin: Optional[float],
                 glyphs_per_class: int = GLYPHS_PER_CLASS):
    """The study's run of `loss` at batch size `batch` (also what benchmarks/bench_step.py times)."""
    from apl.demo.settings import config

    changes = {"lr": lr, "batch_size": batch, "images_per_class": K, "epochs": EPOCHS,
               "steps_per_epoch": max(1, total_steps // EPOCHS), "glyphs_per_class": glyphs_per_class,
               "chunk_size": CHUNK if batch > CHUNK else None}
    if margin is not None:
        changes["triplet_margin"] = margin
    return config(loss, seed=seed, dataset=dataset, **changes)


def _run_one(spec: dict) -> dict:
    """In this process, under an address-space limit: one training run; its history."""
    limit = int(spec["memory_gb"] * 2 ** 30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from apl.train import Trainer
    from apl.train.divergence import TrainingDiverged

    cfg = study_config(spec["loss"], spec["batch_size"], spec["steps"], spec["lr"], spec["seed"], spec["dataset"],
                  spec.get("margin"), spec.get("glyphs_per_class", GLYPHS_PER_CLASS))
    try:
        history = Trainer(cfg, spec["out"], log=lambda m: None, progress=False, overwrite=True).run()
    except TrainingDiverged as err:
        return {"status": "diverged", "reason": str(err)}
    return {"status": "ok", "history": history}


def run(spec: dict, timeout_s: float = 7200) -> dict:
    """`_run_one` in a fresh process: {"status": "ok", "history": [...]} or the reason it could not run."""
    t0 = time.perf_counter()
    try:
        r = subprocess.run([sys.executable, "-m", "experiments.batch_size", "--one", json.dumps(spec)],
                           capture_output=True, text=True, timeout=timeout_s, env=dict(os.environ),
                           cwd=Path(__file__).resolve().parents[1])
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "reason": f"over {timeout_s:.0f} s", "seconds": round(timeout_s, 1)}
    seconds = round(time.perf_counter() - t0, 1)
    if r.returncode == 0:
        return {**json.loads(r.stdout.strip().splitlines()[-1]), "seconds": seconds}
    tail = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit status {r.returncode}"
    if any(sign in r.stderr for sign in _OUT_OF_MEMORY) or r.returncode < 0:
        return {"status": "memory", "reason": f"over the {spec['memory_gb']:g} GB address-space limit: {tail[:200]}",
                "seconds": seconds}
    return {"status": "failed", "reason": tail[:300], "seconds": seconds}


def _key(r: dict) -> tuple:
    return (r["phase"], r["loss"], r["batch_size"], r.get("budget"), r["lr"], r.get("margin"), r["seed"])


def record(phase: str, loss: str, batch: int, budget: str, lr: float, margin, seed: int, result: dict) -> dict:
    """A run's record: the keys of the study records (apl/demo/records.py) and what this study adds."""
    rec = {"study": "batch-size", "phase": phase, "setting": f"equal {budget}", "budget": budget, "loss": loss,
           "batch_size": batch, "sampler": "pk", "class_balanced": False, "seed": seed, "lr": lr, "margin": margin,
           "seconds": result.get("seconds"), "code": _commit()}
    if result["status"] != "ok":
        return {**rec, "status": result["status"], "reason": result.get("reason", "")}
    h = result["history"]
    last = h[-1]
    steps = int(last["steps"])
    prefix = "eval_"
    rec.update({"status": "ok", "map@r": last[prefix + "map@r"], "map": last[prefix + "map"], "p@1": last[prefix + "p@1"],
                "steps": steps, "images_seen": int(last["images_seen"]),
                "step_s": round(sum(r["time_s"] for r in h) / steps, 4),
                "curve": [round(r[prefix + "map@r"], 4) for r in h]})
    return rec


def _load(path: Path) -> list[dict]:
    return json.loads(path.read_text())["runs"] if path.exists() else []


def _commit() -> Optional[str]:
    """The commit of the code that made the runs (the study is only reproducible at it)."""
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).resolve().parent).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


def _save(path: Path, runs: list[dict], args) -> None:
    ran = {r["loss"] for r in runs if r["phase"] == "final"}
    if args.phase != "tune" or not ran:  # a loss only tuned (triplet-hard) is in the tuning table only
        ran |= set(args.losses)
    losses = [x for x in LOSSES if x in ran] + sorted(ran - set(LOSSES))  # a partial run keeps the others
    batches = sorted({r["batch_size"] for r in runs} | set(args.batches))
    report = {"what": __doc__.split("\n\n")[0].replace("\n", " "), "batches": batches, "losses": losses,
              "code": _commit(),
              "images": args.images, "steps": args.steps, "seeds": list(args.seeds), "chunk": CHUNK,
              "memory_gb": args.memory_gb, "runs": runs}
    path.write_text(json.dumps(report, indent=1))


def next_rate(runs: list[dict], loss: str, batch: int, margin, rates: list[float]) -> Optional[float]:
    """The rate to try next when the best validation run of (loss, batch, margin) among `rates` used
    the largest (then 4 times it) or the smallest (then a quarter of it); None when the best is
    inside the grid or no run of it trained."""
    ok = [r for r in runs if r["phase"] == "tune" and r["loss"] == loss and r["batch_size"] == batch
          and r.get("margin") == margin and r["lr"] in rates and r.get("status") == "ok"]
    if not ok:
        return None
    best = max(ok, key=lambda r: r["map@r"])["lr"]
    if best == max(rates):
        return round(best * 4, 6)
    if best == min(rates) and len(rates) > 1:
        return round(best / 4, 6)
    return None


def chosen_settings(runs: list[dict]) -> dict:
    """(loss, B) -> {"lr", "margin", "validation_map@r"}: the best validation run of each. A loss
    with a margin has it chosen at MARGIN_BATCH (where the margins are tuned) and every other B
    chooses among its runs with that margin only."""
    best: dict = {}
    tuned = [r for r in runs if r["phase"] == "tune" and r.get("status") == "ok"]
    for r in sorted(tuned, key=lambda r: r["batch_size"] != MARGIN_BATCH):  # the margin's batch first
        k = (r["loss"], r["batch_size"])
        margin = best.get((r["loss"], MARGIN_BATCH), {}).get("margin")
        if r["loss"] in MARGIN_LOSSES and r["batch_size"] != MARGIN_BATCH and margin is not None \
                and r.get("margin") != margin:
            continue
        if k not in best or r["map@r"] > best[k]["validation_map@r"]:
            best[k] = {"lr": r["lr"], "margin": r.get("margin"), "validation_map@r": r["map@r"]}
    return best


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--phase", choices=["tune", "final", "all"], default="all")
    p.add_argument("--losses", nargs="+", default=list(LOSSES))
    p.add_argument("--batches", type=int, nargs="+", default=list(BATCHES))
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    p.add_argument("--images", type=int, default=IMAGES)
    p.add_argument("--steps", type=int, default=STEPS)
    p.add_argument("--memory-gb", type=float, default=MEMORY_LIMIT_GB)
    p.add_argument("--margins", type=float, nargs="+", default=list(MARGINS),
                   help="the triplet margins tried at the margin's batch size")
    p.add_argument("--max-extensions", type=int, default=MAX_GRID_EXTENSIONS,
                   help="how many times a best rate on an edge of the grid extends it")
    p.add_argument("--quick", metavar="OUT", help="plumbing only: B = 64, 128, one lr, one seed, 16 steps, the demo's "
                                                  "16 images per class, written to OUT")
    p.add_argument("--out", default=str(RESULTS / "batch_size.json"))
    p.add_argument("--work", default="runs/batch_size", help="run folders (checkpoints), not kept in the results")
    a = p.parse_args(argv)
    if a.one:
        print(json.dumps(_run_one(json.loads(a.one))))
        return []
    lr_factors, margins_grid, glyphs_per_class, extensions = LR_FACTORS, tuple(a.margins), GLYPHS_PER_CLASS, a.max_extensions
    if a.quick:
        a.out, a.batches, a.seeds, a.images, a.steps = a.quick, [64, 128], [0], 64 * 16, 16
        lr_factors, margins_grid, glyphs_per_class, extensions = (1.0,), (0.2,), 16, 0
    out = Path(a.out)
    runs = _load(out)
    done = {_key(r) for r in runs}
    work = Path(a.work)

    def go(phase, loss, batch, budget, lr, margin, seed, dataset):
        spec_key = (phase, loss, batch, budget, lr, margin, seed)
        if spec_key in done:
            return
        total = steps_for(batch, budget, a.images, a.steps)
        spec = {"loss": loss, "batch_size": batch, "steps": total, "lr": lr, "margin": margin, "seed": seed,
                "dataset": dataset, "memory_gb": a.memory_gb, "glyphs_per_class": glyphs_per_class,
                "out": str(work / f"{phase}-{loss}-B{batch}-{budget}-lr{lr:g}-m{margin}-s{seed}")}
        rec = record(phase, loss, batch, budget, lr, margin, seed, run(spec))
        runs.append(rec)
        done.add(spec_key)
        _save(out, runs, a)
        what = f"MAP@R {rec['map@r']:.4f} ({rec['step_s']:.2f} s/step)" if rec["status"] == "ok" else \
            f"cannot run ({rec['status']}): {rec['reason']}"
        print(f"{phase:5s} {loss:12s} B={batch:<5d} {budget:6s} lr {lr:g} margin {margin} seed {seed}: {what}", flush=True)

    if a.phase in ("tune", "all"):
        first = MARGIN_BATCH if MARGIN_BATCH in a.batches else a.batches[0]  # the margin is tuned at this B,
        for loss in a.losses:                                                # before the others use it
            for batch in sorted(a.batches, key=lambda b: b != first):
                margins = margins_grid if loss in MARGIN_LOSSES and batch == first else (None,)
                if loss in MARGIN_LOSSES and batch != first:
                    margins = (chosen_settings(runs).get((loss, first), {}).get("margin") or 0.2,)
                for margin in margins:
                    rates = [round(BASE_LR[loss] * f, 6) for f in lr_factors]
                    for lr in rates:
                        go("tune", loss, batch, "images", lr, margin, 0, "glyphs-val")
                    for _ in range(extensions):
                        lr = next_rate(runs, loss, batch, margin, rates)
                        if lr is None:
                            break
                        rates.append(lr)
                        go("tune", loss, batch, "images", lr, margin, 0, "glyphs-val")
    if a.phase in ("final", "all"):
        chosen = chosen_settings(runs)
        for loss in a.losses:
            for batch in a.batches:
                c = chosen.get((loss, batch))
                if c is None:
                    print(f"no tuned rate for {loss} at B={batch}: run --phase tune first", flush=True)
                    continue
                for budget in ("images", "steps"):
                    for seed in a.seeds:
                        go("final", loss, batch, budget, c["lr"], c["margin"], seed, "glyphs")
    write_report(out)
    return runs


def _mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}"


def write_report(path: Path) -> str:
    """The tables (markdown, printed) and the plot of the study, from its JSON."""
    report = json.loads(path.read_text())
    text = report_text(report)
    print(text)
    _plot(report, path.with_suffix(".png"))
    return text


def report_text(report: dict) -> str:
    """The study's tables in markdown (docs/results.md shows them)."""
    runs = report["runs"]
    batches, losses = report["batches"], report["losses"]
    chosen = chosen_settings(runs)
    lines = [f"Held-out MAP@R (mean ± std over seeds {report['seeds']}); B = batch size.", ""]
    for budget, what in (("images", f"equal images ({report['images']} per run)"),
                         ("steps", f"equal steps ({report['steps']} per run)")):
        lines += [f"**{what}**", "", "| loss | " + " | ".join(f"B={b}" for b in batches) + " |",
                  "|---|" + "---|" * len(batches)]
        for loss in losses:
            cells = []
            for b in batches:
                rs = [r for r in runs if r["phase"] == "final" and r["loss"] == loss and r["batch_size"] == b
                      and r["budget"] == budget]
                ok = [r for r in rs if r["status"] == "ok"]
                diverged = [r for r in rs if r["status"] == "diverged"]
                bad = [r for r in rs if r["status"] not in ("ok", "diverged")]
                if bad:  # the batch could not be held (memory, time): no seed is a result
                    cells.append(f"cannot run ({bad[0]['status']}: {bad[0]['reason'][:80]})")
                    continue
                step = statistics.fmean(r["step_s"] for r in ok) if ok else None
                cells.append(_mean_std([r["map@r"] for r in ok]) + (f" ({step:.2f} s/step)" if step else "")
                             + (f", {len(diverged)} of {len(rs)} seeds diverged" if diverged else ""))
            lines.append(f"| {loss} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines) + "\n" + tuning_text(report) + "\n" + time_text(runs)


def time_text(runs: list[dict]) -> str:
    """How long the recorded runs took, per phase (each run's wall time, data making included)."""
    parts = []
    for phase in ("tune", "final"):
        secs = [r["seconds"] for r in runs if r["phase"] == phase and r.get("seconds")]
        if secs:
            parts.append(f"{phase} {len(secs)} runs, {sum(secs) / 3600:.1f} h")
    if not parts:
        return ""
    codes = sorted({r.get("code") or "unknown" for r in runs})
    return ("Time of the recorded runs, one run at a time (their wall time, data making included): " + "; ".join(parts)
            + f". Code: {', '.join(codes)}.\n")


def tuning_text(report: dict) -> str:
    """The rates (and margins) chosen on the validation split, and how many tuning runs collapsed
    (validation MAP@R below COLLAPSED) or diverged, per loss."""
    runs, batches = report["runs"], report["batches"]
    # a loss tuned once and then left out of the study (triplet-hard collapsed) keeps its row
    losses = list(report["losses"]) + sorted({r["loss"] for r in runs if r["phase"] == "tune"} - set(report["losses"]))
    chosen = chosen_settings(runs)
    lines = ["**learning rate (and margin) chosen on the validation split**, validation MAP@R; \"at an edge of "
             "the grid\": the best rate is still the largest or smallest tried after the grid's extensions", "",
             "| loss | " + " | ".join(f"B={b}" for b in batches) + " | tuning runs collapsed / diverged |",
             "|---|" + "---|" * (len(batches) + 1)]
    for loss in losses:
        cells = []
        for b in batches:
            c = chosen.get((loss, b))
            tried = [r["lr"] for r in runs if r["phase"] == "tune" and r["loss"] == loss and r["batch_size"] == b
                     and r.get("margin") == (c or {}).get("margin")]
            edge = c is not None and len(tried) > 1 and c["lr"] in (max(tried), min(tried))
            cells.append("-" if c is None else f"lr {c['lr']:g}" + (f", margin {c['margin']:g}" if c["margin"] else "")
                         + f" ({c['validation_map@r']:.3f})" + (" at an edge of the grid" if edge else ""))
        tuned = [r for r in runs if r["phase"] == "tune" and r["loss"] == loss]
        collapsed = sum(r.get("status") == "ok" and r["map@r"] < COLLAPSED for r in tuned)
        diverged = sum(r.get("status") == "diverged" for r in tuned)
        cells.append(f"{collapsed} / {diverged} of {len(tuned)}")
        lines.append(f"| {loss} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def final_values(runs: list[dict], loss: str, batch: int, budget: str) -> list[float]:
    """Held-out MAP@R of the final runs of (loss, B, budget) that trained, one per seed."""
    return [r["map@r"] for r in runs if r["phase"] == "final" and r["loss"] == loss and r["batch_size"] == batch
            and r.get("budget") == budget and r["status"] == "ok"]


def batch_gain(runs: list[dict], loss: str, batches: list[int], budget: str) -> Optional[dict]:
    """What the largest batch gives `loss` over the smallest: the difference of the means, the sum of
    their standard deviations (the spread it must exceed to count) and the batch size of the best
    mean; None while a point is missing."""
    vals = {b: final_values(runs, loss, b, budget) for b in batches}
    if any(len(v) < 2 for v in vals.values()):
        return None
    means = {b: statistics.fmean(v) for b, v in vals.items()}
    lo, hi = batches[0], batches[-1]
    return {"gain": means[hi] - means[lo], "spread": statistics.stdev(vals[hi]) + statistics.stdev(vals[lo]),
            "best": max(means, key=means.get), "from": lo, "to": hi}


def _change(name: str, g: dict) -> tuple[int, str]:
    """+1, 0 or -1 (a gain beyond the spread, a change within it, a drop beyond it) and its words."""
    sign = 1 if g["gain"] > g["spread"] else -1 if g["gain"] < -g["spread"] else 0
    verb = {1: "gains", 0: "changes by", -1: "drops by"}[sign]
    return sign, f"{name} {verb} {g['gain']:+.3f} from B = {g['from']} to {g['to']} (spread {g['spread']:.3f}, best at B = {g['best']})"


def claim_verdict(ap: Optional[dict], triplet: Optional[dict], triplet_name: str = "the triplet") -> str:
    """The paper's claim, "AP improves as the batch grows, a triplet loss with hard mining does not",
    judged from two `batch_gain`s as the README judges every claim: a change counts when it exceeds
    the spread of the seeds (the sum of the two points' standard deviations)."""
    if ap is None or triplet is None:
        return "-: a point has fewer than two seeds that trained"
    a, ap_text = _change("AP_Q", ap)
    t, tri_text = _change(triplet_name, triplet)
    if a > 0:
        verdict = "yes" if t <= 0 else "partly: AP_Q gains, but so does the triplet"
    elif a == 0:
        verdict = "not shown: AP_Q's change is within the spread"
    else:
        verdict = "no: AP_Q drops"
    return f"{verdict}; {ap_text}; {tri_text}"


def _plot(report: dict, path: Path) -> None:
    from matplotlib.figure import Figure

    runs = [r for r in report["runs"] if r["phase"] == "final" and r["status"] == "ok"]
    fig = Figure(figsize=(10, 3.8))
    axes = fig.subplots(1, 2)
    for ax, budget, title in ((axes[0], "images", f"equal images ({report['images']})"),
                              (axes[1], "steps", f"equal steps ({report['steps']})")):
        for loss in report["losses"]:
            xs, ys, es = [], [], []
            for b in report["batches"]:
                v = [r["map@r"] for r in runs if r["loss"] == loss and r["batch_size"] == b and r["budget"] == budget]
                if v:
                    xs.append(b)
                    ys.append(statistics.fmean(v))
                    es.append(statistics.stdev(v) if len(v) > 1 else 0.0)
            if xs:
                ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=loss)
        ax.set_xscale("log", base=2)
        ax.set(xlabel="batch size B", ylabel="held-out MAP@R", title=title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("batch-size study: glyphs, 150 unseen classes (mean ± std over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
