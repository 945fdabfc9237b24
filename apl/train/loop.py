"""`Trainer`: the training loop of `apl train`, for one process or several under torchrun.

Order of an epoch: train its steps, save last.pt (so the epoch's compute is safe before anything
else can fail), evaluate on the held-out set, then save best.pt (when the mAP improved) and last.pt
again with the evaluation. A resume from a checkpoint whose evaluation is missing evaluates first;
evaluation draws no random numbers, so the resumed run is the uninterrupted one.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from ..data import CorruptImageError, ImageList, check_images, compare_splits, describe_split
from ..evaluation.extraction import evaluate
from ..losses import build_loss
from ..memory import CrossBatchMemory, with_memory
from ..nn.backbones import RESNETS
from ..plots.curves import epochs_text, plot_curves
from . import launch as L
from .amp import AMP, cpu_note
from .checkpoint import FORMAT, VERSION, atomic_save, build_model, load_checkpoint, rng_state, set_rng_state
from .config import TrainConfig
from .data import (SeededBatches, batch_capacity, build_datasets, build_sampler, check_data, check_workers,
                   default_workers, train_loader)
from .divergence import checked_step
from .optim import build_optimizer, set_learning_rate
from .scaler_watch import ScalerWatch
from .run_folder import MetricsLog, clear_run_files, plan_start, write_config
from .step import TrainStep
from .weights import init_head_from_features, load_init_weights



def _data_error(err: Exception) -> Optional[str]:
    """The one-line reason when a loader failed on an image file (re-raised from a worker, the
    message carries the worker's traceback; its last line names the file)."""
    text = str(err)
    if isinstance(err, (CorruptImageError, FileNotFoundError)) or "CorruptImageError" in text or "image file not found" in text:
        lines = [ln for ln in text.strip().splitlines() if ln.strip()]
        last = lines[-1] if lines else text
        for name in ("CorruptImageError: ", "FileNotFoundError: "):
            if name in last:
                last = last.split(name, 1)[1]
        return last
    return None


class Trainer:
    """Runs `cfg` in the folder `out` (see `apl.train.run_folder` for the files).

    Args:
        cfg: the run's configuration.
        out: run folder.
        log: where progress lines go (rank 0 only).
        progress: progress display: a bar on a terminal, plain periodic lines otherwise.
        workers: data-loader worker processes (None: `default_workers`); results do not depend on it.
        prefetch: batches each worker loads ahead.
        overwrite: replace the run files of a non-empty `out` (else such a folder is refused).
        check_images: decode every image of both sets before training (`apl check-images`) and stop
            with the list of bad ones, instead of at the first one mid-epoch.
    """

    def __init__(self, cfg: TrainConfig, out: str | Path, log: Callable[[str], None] = print, progress: bool = True,
                 workers: Optional[int] = None, prefetch: int = 2, overwrite: bool = False,
                 check_images: bool = False) -> None:
        self.cfg = cfg.validate().resolved()  # absolute paths: the run can be resumed and evaluated from anywhere
        check_workers(workers, prefetch)
        self.out = Path(out)
        self.log = log
        self.progress = progress
        self.workers = default_workers(cfg) if workers is None else workers
        self.prefetch = prefetch
        self.overwrite = overwrite
        self.check_images = check_images
        self.model: Optional[nn.Module] = None
        self.is_main = True  # whether this process is rank 0 (set by `run`)
        self.batch_size = cfg.batch_size  # the global batch, capped at the training set's size (set by `run`)

    # -- set-up ---------------------------------------------------------------------------------
    def _prepare(self, launch: L.Launch, resume: bool):
        """Everything that can fail on bad input, before anything is written."""
        cfg = self.cfg
        L.check_batch(cfg.batch_size, launch.world_size)
        train_set, eval_set, in_ch = build_datasets(cfg)
        check_data(train_set, eval_set)
        if launch.is_main:
            self.log(describe_split("training set", train_set))
            self.log(describe_split("held-out set", eval_set))
            for warning in compare_splits(train_set, eval_set):
                self.log(f"warning: {warning}")
        if self.check_images:
            self._check_images(train_set, eval_set)
        self.batch_size = cfg.batch_size
        capacity = batch_capacity(cfg, train_set.targets)
        if cfg.batch_size > capacity:  # a batch would repeat images: trivial positives for the ranking losses
            self.batch_size = max(launch.world_size, capacity // launch.world_size * launch.world_size)
            if launch.is_main:
                what = "images in classes of two or more" if cfg.sampler == "pk" else "images"
                self.log(f"--batch-size {cfg.batch_size} is larger than the training set ({capacity} {what}): "
                         f"batches of {self.batch_size}")
        note = cpu_note(cfg.amp) if cfg.amp and launch.device.type == "cpu" else None
        if note and launch.is_main:
            self.log(note)
        torch.manual_seed(cfg.seed)
        model = build_model(cfg, in_ch)
        if in_ch == 1 and cfg.eval_dataset is not None and launch.is_main:
            self.log(f"notice: the network takes grey images ({cfg.dataset!r} is grey): the held-out images of "
                     f"{cfg.eval_dataset} are read as grey")
        if in_ch == 1 and cfg.backbone in RESNETS and launch.is_main:
            self.log(f"notice: {cfg.backbone} takes RGB images: the grey images of {cfg.dataset!r} are repeated over its "
                     "three input channels")
        if cfg.init is not None:
            what = load_init_weights(model, cfg.init)
            if launch.is_main:
                self.log(f"initialised the {what} from {cfg.init}")
        sampler = build_sampler(cfg, train_set.targets, self.batch_size)
        if launch.is_main and sampler.describe():
            self.log(sampler.describe())
        plan = L.agree(launch, lambda: plan_start(self.out, cfg, resume, self.overwrite))
        return train_set, eval_set, model, sampler, plan

    def _check_images(self, *datasets) -> None:
        """Every image of the image-file sets decoded up front; one error listing all bad ones."""
        problems = []
        for name, ds in zip(("training set", "held-out set"), datasets):
            if isinstance(ds, ImageList):
                problems += [f"{name}: {p}" for p in check_images(ds, self.workers or None).problems]
        if problems:
            more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
            raise CorruptImageError(f"--check-images: {len(problems)} bad images; fix or remove them before training:\n  "
                                    + "\n  ".join(problems[:20]) + more)

    def run(self, resume: bool = False, stop_after: Optional[int] = None) -> list[dict]:
        """Trains; returns the per-epoch history. `resume` continues the run in `out` (see
        `run_folder.plan_start`). `stop_after` ends early after that many epochs of this call."""
        cfg = self.cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        launch = L.setup(cfg.device)
        self.is_main = launch.is_main
        try:
            return self._run(launch, resume, stop_after)
        finally:
            L.teardown(launch)

    def _run(self, launch: L.Launch, resume: bool, stop_after: Optional[int]) -> list[dict]:
        cfg, device, main = self.cfg, launch.device, launch.is_main
        train_set, eval_set, model, sampler, plan = self._prepare(launch, resume)
        plain_train = build_datasets(cfg, augment=False)[0] if cfg.whitening or cfg.whitening_init else None
        whitening_set = plain_train if cfg.whitening else None

        # Nothing was written before this point.
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            if self.overwrite and not resume:
                clear_run_files(self.out)
            for stale in self.out.glob(".*.tmp-*"):  # left by a process killed during a save
                stale.unlink(missing_ok=True)
            write_config(self.out, cfg)
            if plan.note:
                self.log(plan.note)
        metrics = MetricsLog(self.out / "metrics.jsonl")

        model = model.to(device)
        if cfg.whitening_init == "pca" and plan.checkpoint is None:
            used = init_head_from_features(model, plain_train, seed=cfg.seed)
            if main:
                self.log(f"started the head from the pooled features of {used} training images (--whitening-init pca)")
        opt = build_optimizer(cfg, model)
        amp_dtype = AMP.get(cfg.amp) if cfg.amp else None
        scaler = torch.amp.GradScaler(device.type) if cfg.amp == "fp16" else None
        watch = ScalerWatch(scaler) if scaler is not None else None
        # The cross-batch memory is part of the run's state: saved and restored with the checkpoint.
        memory = CrossBatchMemory(cfg.memory, model.out_dim).to(device) if cfg.memory else None
        history: list[dict] = []
        start, step_global, best, evaluated = 0, 0, None, True
        if plan.checkpoint is not None:
            ck = load_checkpoint(plan.checkpoint)
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            if scaler is not None and ck.get("scaler"):
                scaler.load_state_dict(ck["scaler"])
            if memory is not None and ck.get("memory"):
                memory.load_state_dict(ck["memory"])
            set_rng_state(ck["rng"])
            history, start, step_global = list(ck["history"]), int(ck["epoch"]), int(ck["step"])
            best, evaluated = ck.get("best_map"), bool(ck["evaluated"])
            if main:
                metrics.keep_until(start, evaluated)
                self.log(f"resumed from {plan.checkpoint} after epoch {start}" + ("" if evaluated else " (evaluating it first)"))
        elif main:
            (self.out / "metrics.jsonl").write_text("")

        loss_fn = build_loss(cfg.loss, num_bins=cfg.num_bins, class_balanced=cfg.class_balanced, margin=cfg.margin,
                             temperature=cfg.temperature, recall_k=cfg.recall_k, k_temperature=cfg.k_temperature)
        if memory is not None:  # the global batch of all ranks goes into the same memory on every rank
            loss_fn = with_memory(loss_fn, memory)
        step_fn = TrainStep(model, loss_fn, device, launch.distributed, cfg.chunk_size, amp_dtype, scaler)
        batches = SeededBatches(sampler, cfg.seed, launch.rank, launch.world_size)
        loader = train_loader(train_set, batches, self.workers, self.prefetch, device)
        steps_per_epoch = len(sampler)
        total_steps = cfg.epochs * steps_per_epoch
        eval_kw = dict(scales=cfg.scales, workers=self.workers, prefetch=self.prefetch, distributed=launch.distributed)

        def checkpoint(epoch: int, done_eval: bool) -> dict:
            return {"format": FORMAT, "version": VERSION, "config": cfg.to_dict(), "epoch": epoch, "step": step_global,
                    "evaluated": done_eval, "model": model.state_dict(), "optimizer": opt.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else None, "rng": rng_state(),
                    "memory": memory.state_dict() if memory is not None else None,
                    "history": history, "best_map": best, "world_size": launch.world_size}

        def finish_epoch(epoch: int, row: dict) -> None:
            nonlocal best
            t0 = time.perf_counter()
            row.update({f"eval_{k}": v for k, v in evaluate(model, eval_set, whitening_set, cfg.whitening, **eval_kw).items()})
            row["eval_time_s"] = time.perf_counter() - t0
            history.append(row)
            improved = best is None or row["eval_map"] > best
            if improved:
                best = row["eval_map"]
            if main:
                metrics.write(row)
                state = checkpoint(epoch, True)
                if improved:  # best.pt first: a kill between the two saves re-evaluates and rewrites it
                    atomic_save(state, self.out / "best.pt")
                atomic_save(state, self.out / "last.pt")
                self.log(f"epoch {epoch:3d}  loss {row['train_loss']:.4f}  held-out mAP {row['eval_map']:.4f}  "
                         f"P@1 {row['eval_p@1']:.4f}  ({row['time_s']:.1f}s, {row['images_per_s']:.0f} img/s)")

        try:
            if not evaluated:  # the checkpoint's epoch was trained but not evaluated
                pending = ck["pending_row"]
                finish_epoch(start, dict(pending))
            for epoch in range(start, cfg.epochs):
                if stop_after is not None and epoch - start >= stop_after:
                    break
                batches.set_epoch(epoch)
                model.train()
                on_disk = (f"{self.out / 'last.pt'} holds the run as it was after epoch {epoch}" if epoch > 0 else
                           "no checkpoint was written (it diverged in the first epoch)")
                t0, losses = time.perf_counter(), []
                for step, (x, y), show in self._steps(loader, epoch, steps_per_epoch, main):
                    lr = set_learning_rate(opt, cfg, step_global, total_steps)
                    y = torch.as_tensor(y).to(device, non_blocking=True)
                    opt.zero_grad(set_to_none=True)
                    loss = checked_step(step_fn, x, y, epoch, step, lr, cfg.amp, on_disk,
                                        None if cfg.schedule == "none" else cfg.schedule)
                    if watch is not None:
                        watch.step(opt)
                    else:
                        opt.step()
                    step_global += 1
                    losses.append(float(loss))
                    if main:
                        metrics.write({"epoch": epoch + 1, "step": step + 1, "loss": losses[-1], "lr": lr})
                    show(losses[-1], lr)
                elapsed = time.perf_counter() - t0
                row = {"epoch": epoch + 1, "train_loss": sum(losses) / len(losses), "time_s": elapsed,
                       "images_per_s": self.batch_size * len(losses) / max(elapsed, 1e-9),
                       "steps": step_global, "images_seen": step_global * self.batch_size}
                if watch is not None:
                    row["skipped_steps"] = watch.end_epoch()
                    if row["skipped_steps"] and main:
                        self.log(f"epoch {epoch + 1}: the fp16 gradient scaler skipped {row['skipped_steps']} of "
                                 f"{len(losses)} optimizer steps (non-finite float16 gradients)")
                if main:
                    state = checkpoint(epoch + 1, False)
                    state["pending_row"] = row
                    atomic_save(state, self.out / "last.pt")
                finish_epoch(epoch + 1, row)
        finally:
            metrics.close()
        self.model = model
        if main and history:
            plot_curves({cfg.loss: history}, self.out / "curves.png",
                        f"{cfg.loss} on {Path(cfg.dataset).name}: {epochs_text(len(history))}")
        return history

    def _steps(self, loader, epoch: int, steps: int, main: bool):
        """(step, batch, show) for each batch, with a progress bar on a terminal and plain lines
        (about ten per epoch) otherwise; an unreadable image stops the run with its path."""
        cfg = self.cfg
        bar = None
        if self.progress and main and sys.stderr.isatty():
            from tqdm import tqdm

            bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", leave=False)
        every = max(1, steps // 10)
        t0 = time.perf_counter()

        def show_at(step: int):
            def show(loss: float, lr: float) -> None:
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4f}")
                elif self.progress and main and ((step + 1) % every == 0 or step + 1 == steps):
                    rate = self.batch_size * (step + 1) / max(time.perf_counter() - t0, 1e-9)
                    self.log(f"  epoch {epoch + 1}/{cfg.epochs} step {step + 1}/{steps}  loss {loss:.4f}  lr {lr:.3g}  {rate:.0f} img/s")
            return show

        it = iter(loader)
        try:
            for step in range(steps):
                try:
                    batch = next(it)
                except StopIteration:
                    break
                except Exception as err:  # noqa: BLE001
                    reason = _data_error(err)
                    if reason is None:
                        raise
                    safe = f"the last checkpoint ({self.out / 'last.pt'}) is safe" if (self.out / "last.pt").exists() else "no checkpoint was written yet"
                    raise CorruptImageError(
                        f"training stopped in epoch {epoch + 1}: {reason}; {safe}. Fix or remove the file "
                        "(`apl check-images` lists every bad file), then continue with --resume"
                    ) from None
                yield step, batch, show_at(step)
        finally:
            if bar is not None:
                bar.close()
