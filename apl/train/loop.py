"""`Trainer`: the training loop of `apl train`, for one process or several under torchrun.

A run: `prepare` (everything that can fail on bad input, before anything is written), `start` (the
run folder, the training state, from a checkpoint when resuming), then `fit`: for each epoch
`train_epoch`, `save` (so the epoch's compute is safe before anything else can fail), `evaluate`,
and `save` again with the evaluation (best.pt when the mAP improved). A resume from a checkpoint
whose evaluation is missing evaluates first; evaluation draws no random numbers, so the resumed
run is the uninterrupted one. What a checkpoint holds is `TrainState`'s (state.py); guards against
divergence and fp16 overflow are divergence.py and scaler_watch.py, the display progress.py.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from ..data import CorruptImageError, ImageList, check_images, compare_splits, describe_split
from ..evaluation.extraction import evaluate
from ..memory import CrossBatchMemory, with_memory
from ..nn.backbones import RESNETS
from ..plots.curves import epochs_text, plot_curves
from . import launch as L
from .amp import AMP, cpu_note
from .checkpoint import atomic_save, load_checkpoint
from .config import TrainConfig
from .data import (SeededBatches, UnreadableImage, batch_capacity, build_datasets, build_sampler, check_data,
                   check_workers, default_workers, train_loader)
from .divergence import checked_evaluation, checked_step
from .losses import build_loss
from .model import build_model
from .optim import build_optimizer, set_learning_rate
from .progress import EpochProgress
from .run_folder import MetricsLog, StartPlan, clear_run_files, plan_start, write_config
from .scaler_watch import ScalerWatch
from .state import TrainState
from .step import TrainStep
from .weights import init_head_from_features, load_init_weights


@dataclass
class _Prepared:
    """What `prepare` checked and built: the data, the untrained model, the batches, how to start."""

    train_set: object
    eval_set: object
    model: nn.Module
    sampler: object
    plan: StartPlan
    resume: bool


@dataclass
class _Run:
    """What the epochs of a started run use."""

    launch: L.Launch
    state: TrainState
    step_fn: TrainStep
    batches: SeededBatches
    loader: object
    eval_set: object
    whitening_set: object
    metrics: MetricsLog
    watch: Optional[ScalerWatch]
    steps_per_epoch: int


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
        self.batch_size = cfg.batch_size  # the global batch, capped at what the sampler can draw (set by `prepare`)

    def _say(self, launch: L.Launch, line: str) -> None:
        if launch.is_main:
            self.log(line)

    # -- the run -----------------------------------------------------------------------------------
    def run(self, resume: bool = False, stop_after: Optional[int] = None) -> list[dict]:
        """Trains; returns the per-epoch history. `resume` continues the run in `out` (see
        `run_folder.plan_start`). `stop_after` ends early after that many epochs of this call."""
        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)
        launch = L.setup(self.cfg.device)
        self.is_main = launch.is_main
        try:
            prepared = self.prepare(launch, resume)
            run = self.start(launch, prepared)
            return self.fit(run, stop_after)
        finally:
            L.teardown(launch)

    def prepare(self, launch: L.Launch, resume: bool) -> _Prepared:
        """Everything that can fail on bad input, before anything is written."""
        cfg = self.cfg
        L.check_batch(cfg.batch_size, launch.world_size)
        train_set, eval_set, in_ch = build_datasets(cfg)
        check_data(train_set, eval_set)
        self._say(launch, describe_split("training set", train_set))
        self._say(launch, describe_split("held-out set", eval_set))
        for warning in compare_splits(train_set, eval_set):
            self._say(launch, f"warning: {warning}")
        if self.check_images:
            self._check_images(train_set, eval_set)
        self.batch_size = cfg.batch_size
        capacity = batch_capacity(cfg, train_set.targets)
        if cfg.batch_size > capacity:  # a batch would repeat images: trivial positives for the ranking losses
            self.batch_size = max(launch.world_size, capacity // launch.world_size * launch.world_size)
            what = "images in classes of two or more" if cfg.sampler == "pk" else "images"
            self._say(launch, f"--batch-size {cfg.batch_size} is larger than the training set ({capacity} {what}): "
                              f"batches of {self.batch_size}")
        note = cpu_note(cfg.amp) if cfg.amp and launch.device.type == "cpu" else None
        if note:
            self._say(launch, note)
        torch.manual_seed(cfg.seed)
        model = build_model(cfg, in_ch)
        if in_ch == 1 and cfg.eval_dataset is not None:
            self._say(launch, f"notice: the network takes grey images ({cfg.dataset!r} is grey): the held-out images of "
                              f"{cfg.eval_dataset} are read as grey")
        if in_ch == 1 and cfg.backbone in RESNETS:
            self._say(launch, f"notice: {cfg.backbone} takes RGB images: the grey images of {cfg.dataset!r} are repeated "
                              "over its three input channels")
        if cfg.init is not None:
            what = load_init_weights(model, cfg.init)
            self._say(launch, f"initialised the {what} from {cfg.init}")
        sampler = build_sampler(cfg, train_set.targets, self.batch_size)
        if sampler.describe():
            self._say(launch, sampler.describe())
        plan = L.agree(launch, lambda: plan_start(self.out, cfg, resume, self.overwrite))
        return _Prepared(train_set, eval_set, model, sampler, plan, resume)

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

    def start(self, launch: L.Launch, p: _Prepared) -> _Run:
        """The run folder (the first writes of the run), the training state (from the checkpoint when
        resuming), the loss, the step and the loader."""
        cfg, device = self.cfg, launch.device
        plain_train = build_datasets(cfg, augment=False)[0] if cfg.whitening or cfg.whitening_init else None
        if launch.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            if self.overwrite and not p.resume:
                clear_run_files(self.out)
            for stale in self.out.glob(".*.tmp-*"):  # left by a process killed during a save
                stale.unlink(missing_ok=True)
            write_config(self.out, cfg)
            if p.plan.note:
                self.log(p.plan.note)
        metrics = MetricsLog(self.out / "metrics.jsonl")
        model = p.model.to(device)
        if cfg.whitening_init == "pca" and p.plan.checkpoint is None:
            used = init_head_from_features(model, plain_train, seed=cfg.seed)
            self._say(launch, f"started the head from the pooled features of {used} training images (--whitening-init pca)")
        scaler = torch.amp.GradScaler(device.type) if cfg.amp == "fp16" else None
        # The cross-batch memory is part of the run's state: saved and restored with the checkpoint.
        memory = CrossBatchMemory(cfg.memory, model.out_dim).to(device) if cfg.memory else None
        state = TrainState(model, build_optimizer(cfg, model), scaler, memory)
        if p.plan.checkpoint is not None:
            state.restore(load_checkpoint(p.plan.checkpoint))
            if launch.is_main:
                metrics.keep_until(state.epoch, state.evaluated)
            self._say(launch, f"resumed from {p.plan.checkpoint} after epoch {state.epoch}"
                              + ("" if state.evaluated else " (evaluating it first)"))
        elif launch.is_main:
            (self.out / "metrics.jsonl").write_text("")
        loss_fn = build_loss(cfg.loss, **{k: v for k, v in cfg.loss_options().items() if k != "memory"})
        if memory is not None:  # the global batch of all ranks goes into the same memory on every rank
            loss_fn = with_memory(loss_fn, memory)
        amp_dtype = AMP.get(cfg.amp) if cfg.amp else None
        step_fn = TrainStep(model, loss_fn, device, launch.distributed, cfg.chunk_size, amp_dtype, scaler)
        batches = SeededBatches(p.sampler, cfg.seed, launch.rank, launch.world_size)
        loader = train_loader(p.train_set, batches, self.workers, self.prefetch, device)
        return _Run(launch, state, step_fn, batches, loader, p.eval_set, plain_train if cfg.whitening else None,
                    metrics, ScalerWatch(scaler) if scaler is not None else None, len(p.sampler))

    def fit(self, run: _Run, stop_after: Optional[int] = None) -> list[dict]:
        """The epochs left (at most `stop_after` of them); the history."""
        state = run.state
        try:
            if not state.evaluated:  # the checkpoint's epoch was trained but not evaluated
                self.evaluate(run, dict(state.pending))
            first = state.epoch
            for epoch in range(first, self.cfg.epochs):
                if stop_after is not None and epoch - first >= stop_after:
                    break
                row = self.train_epoch(run, epoch)
                state.epoch, state.evaluated, state.pending = epoch + 1, False, row
                self.save(run, best=False)
                self.evaluate(run, row)
        finally:
            run.metrics.close()
        self.model = state.model
        if run.launch.is_main and state.history:
            plot_curves({self.cfg.loss: state.history}, self.out / "curves.png",
                        f"{self.cfg.loss} on {Path(self.cfg.dataset).name}: {epochs_text(len(state.history))}")
        return state.history

    def train_epoch(self, run: _Run, epoch: int) -> dict:
        """The steps of one epoch; its row (loss, time, throughput, step and image counts)."""
        cfg, state, main = self.cfg, run.state, run.launch.is_main
        run.batches.set_epoch(epoch)
        state.model.train()
        on_disk = (f"{self.out / 'last.pt'} holds the run as it was after epoch {epoch}" if epoch > 0 else
                   "no checkpoint was written (it diverged in the first epoch)")
        total = cfg.epochs * run.steps_per_epoch
        progress = EpochProgress(epoch, cfg.epochs, run.steps_per_epoch, self.batch_size, self.log, self.progress and main)
        t0, losses = time.perf_counter(), []
        try:
            for step, (x, y) in self._batches(run, epoch):
                lr = set_learning_rate(state.optimizer, cfg, state.step, total)
                y = torch.as_tensor(y).to(run.launch.device, non_blocking=True)
                state.optimizer.zero_grad(set_to_none=True)
                loss = checked_step(run.step_fn, x, y, epoch, step, lr, cfg.amp, on_disk,
                                    None if cfg.schedule == "none" else cfg.schedule)
                if run.watch is not None:
                    run.watch.step(state.optimizer)
                else:
                    state.optimizer.step()
                state.step += 1
                losses.append(float(loss))
                if main:
                    run.metrics.write({"epoch": epoch + 1, "step": step + 1, "loss": losses[-1], "lr": lr})
                progress.show(step, losses[-1], lr)
        finally:
            progress.close()
        elapsed = time.perf_counter() - t0
        row = {"epoch": epoch + 1, "train_loss": sum(losses) / len(losses), "time_s": elapsed,
               "images_per_s": self.batch_size * len(losses) / max(elapsed, 1e-9),
               "steps": state.step, "images_seen": state.step * self.batch_size}
        if run.watch is not None:
            row["skipped_steps"] = run.watch.end_epoch()
            if row["skipped_steps"]:
                self._say(run.launch, f"epoch {epoch + 1}: the fp16 gradient scaler skipped {row['skipped_steps']} of "
                                      f"{len(losses)} optimizer steps (non-finite float16 gradients)")
        return row

    def _batches(self, run: _Run, epoch: int):
        """(step, batch) of an epoch; an image that cannot be read stops the run with its path."""
        it = iter(run.loader)
        for step in range(run.steps_per_epoch):
            try:
                batch = next(it)
            except StopIteration:
                break
            if isinstance(batch, UnreadableImage):
                safe = (f"the last checkpoint ({self.out / 'last.pt'}) is safe" if (self.out / "last.pt").exists()
                        else "no checkpoint was written yet")
                raise CorruptImageError(f"training stopped in epoch {epoch + 1}: {batch.reason}; {safe}. Fix or remove "
                                        "the file (`apl check-images` lists every bad file), then continue with --resume")
            yield step, batch

    def evaluate(self, run: _Run, row: dict) -> None:
        """The held-out metrics of the epoch of `row`, recorded, logged and saved."""
        cfg, state = self.cfg, run.state
        t0 = time.perf_counter()
        epoch = row["epoch"] - 1
        on_disk = (f"{self.out / 'last.pt'} holds this epoch's weights (--resume evaluates them first and stops here "
                   "again)" + (f"; {self.out / 'best.pt'} the best epoch evaluated" if (self.out / "best.pt").exists() else ""))
        metrics = checked_evaluation(
            lambda: evaluate(state.model, run.eval_set, run.whitening_set, cfg.whitening, scales=cfg.scales,
                             workers=self.workers, prefetch=self.prefetch, distributed=run.launch.distributed),
            epoch, state.optimizer.param_groups[0]["lr"], cfg.amp, on_disk, None if cfg.schedule == "none" else cfg.schedule)
        row.update({f"eval_{k}": v for k, v in metrics.items()})
        row["eval_time_s"] = time.perf_counter() - t0
        improved = state.record(row)
        if run.launch.is_main:
            run.metrics.write(row)
            self.save(run, best=improved)
            self.log(f"epoch {row['epoch']:3d}  loss {row['train_loss']:.4f}  held-out mAP {row['eval_map']:.4f}  "
                     f"P@1 {row['eval_p@1']:.4f}  ({row['time_s']:.1f}s, {row['images_per_s']:.0f} img/s)")

    def save(self, run: _Run, best: bool) -> None:
        """last.pt (rank 0), and best.pt first when `best`: a kill between the two saves re-evaluates
        and rewrites it."""
        if not run.launch.is_main:
            return
        ck = run.state.checkpoint(self.cfg, run.launch.world_size)
        if best:
            atomic_save(ck, self.out / "best.pt")
        atomic_save(ck, self.out / "last.pt")
