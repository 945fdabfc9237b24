"""Checkpoint files: written atomically, read without unpickling code. What a checkpoint holds is
the training state's (apl/train/state.py); the model it holds is built by apl/train/model.py.

Writing: the checkpoint goes to a temporary file in the same folder, is flushed and fsynced, then
renamed over the previous one (atomic on POSIX) and the folder entry fsynced; a kill at any moment,
during a save included, leaves the previous or the new checkpoint, both loadable.

Reading: `torch.load(weights_only=True)`, which rebuilds only tensors, numbers, strings, lists and
dicts, so a crafted file cannot run code; every file that is not an apl checkpoint (garbage,
empty, truncated, a bare state dict, a folder) gets one `NotAnAplCheckpointError` that says why.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any, Union

import torch

FORMAT = "apl-checkpoint"
VERSION = 1
PathLike = Union[str, os.PathLike]


class NotAnAplCheckpointError(ValueError):
    """The file is missing, unreadable, or not a checkpoint written by apl."""


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some filesystems do not allow opening a folder
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_save(obj: Any, path: PathLike) -> None:
    """`torch.save(obj, path)` that never leaves a partial file at `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write a small text file atomically (same scheme as `atomic_save`)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def load_checkpoint(path: PathLike) -> dict:
    """The contents of an apl checkpoint; `NotAnAplCheckpointError` naming the file and the reason
    for anything else."""
    path = Path(path)
    if path.is_dir():
        raise NotAnAplCheckpointError(f"not an apl checkpoint: {path} (it is a folder; the run's checkpoints are {path / 'last.pt'} and {path / 'best.pt'})")
    if not path.exists():
        raise NotAnAplCheckpointError(f"not an apl checkpoint: {path} (no such file)")
    if path.stat().st_size == 0:
        raise NotAnAplCheckpointError(f"not an apl checkpoint: {path} (the file is empty)")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":  # torch.save writes a zip archive
        raise NotAnAplCheckpointError(f"not an apl checkpoint: {path} (not a file written by torch.save)")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        detail = str(err).split("Please file an issue")[0].strip().splitlines()
        hint = next((ln.strip() for ln in detail if "Unsupported global" in ln or "GLOBAL" in ln), "")
        raise NotAnAplCheckpointError(
            f"not an apl checkpoint: {path} (it holds Python objects other than tensors, numbers, strings, lists and "
            f"dicts, which apl never writes and does not load, since loading them could run code" + (f"; {hint}" if hint else "") + ")"
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError, KeyError, AttributeError, TypeError, IndexError) as err:
        first = str(err).strip().split(". ")[0] if str(err).strip() else type(err).__name__
        raise NotAnAplCheckpointError(f"not an apl checkpoint: {path} (unreadable, truncated or damaged: {first})") from None
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        what = "a state dict or other torch file" if isinstance(ck, dict) else f"a {type(ck).__name__}"
        raise NotAnAplCheckpointError(
            f"not an apl checkpoint: {path} ({what}, not written by `apl train`; to start training from such "
            f"weights use `apl train --init {path}`)"
        )
    missing = [k for k in ("config", "model", "epoch") if k not in ck]
    if missing:
        raise NotAnAplCheckpointError(f"not an apl checkpoint: {path} (missing {', '.join(missing)})")
    if ck.get("version", 0) > VERSION:
        raise NotAnAplCheckpointError(f"not an apl checkpoint: {path} (format version {ck['version']} is newer than this apl's {VERSION})")
    return ck
