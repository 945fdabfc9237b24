"""Warnings given once per process (per key): the norm check of the embeddings and the fall-back of
`backend="auto"` to the reference. `reset()` forgets what was said (for tests)."""
from __future__ import annotations

import warnings

_given: set[str] = set()


def given(key: str) -> bool:
    return key in _given


def warn_once(key: str, message: str, category: type[Warning], stacklevel: int) -> None:
    """`warnings.warn(message)` the first time `key` is seen in this process; nothing afterwards."""
    if key in _given:
        return
    _given.add(key)
    warnings.warn(message, category, stacklevel=stacklevel + 1)


def reset() -> None:
    _given.clear()
