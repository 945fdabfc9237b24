"""Warnings given once per process and key, pointing at the user's line.

The keys say what a warning is about, so that one case does not hide a different one: the norm
check warns once per (loss function, argument), the fall-back of `backend="auto"` once per reason.
The warning is attributed to the first frame outside apl and torch (the user's call of the loss, or
of the trainer), whatever the depth of apl's own calls. `reset()` forgets what was said (for tests).
"""
from __future__ import annotations

import os
import sys
import warnings

import torch

_given: set[str] = set()
# Frames in these folders are skipped when attributing a warning: apl's own, and torch's (a loss
# module is called through torch.nn.Module.__call__, an op through the dispatcher's Python side).
_INTERNAL = (os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep,
             os.path.dirname(os.path.abspath(torch.__file__)) + os.sep)


def given(key: str) -> bool:
    """Whether the warning of `key` was given; a key ending in ":" asks for any key it begins."""
    return any(k.startswith(key) for k in _given) if key.endswith(":") else key in _given


def user_stacklevel() -> int:
    """The `stacklevel` for a `warnings.warn` in the caller of this function that attributes the
    warning to the first frame outside apl and torch."""
    frame, level = sys._getframe(1), 1  # our caller's own frame is stacklevel 1 of its warnings.warn
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_INTERNAL):
        frame, level = frame.f_back, level + 1
    return level


def warn_once(key: str, message: str, category: type[Warning]) -> None:
    """`warnings.warn(message)` the first time `key` is seen in this process, attributed to the
    user's line; nothing afterwards."""
    if key in _given:
        return
    _given.add(key)
    warnings.warn(message, category, stacklevel=user_stacklevel())


def reset() -> None:
    _given.clear()
