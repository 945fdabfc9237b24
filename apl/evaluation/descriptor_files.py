"""The files `apl extract` writes, and reading them back exactly.

    OUTPUT.npy          descriptors, one row per image (float32)
    OUTPUT.labels.npy   class index of each row (int64)
    OUTPUT.index.tsv    "row<TAB>path<TAB>class", a header line first

A path or class name may hold any character a file system allows, tabs and newlines included: in
the index they are written escaped (backslash as \\\\, tab as \\t, newline as \\n, carriage return as
\\r), so that every row is one line of three fields, and `load_descriptors` undoes it.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence, Union

import numpy as np

PathLike = Union[str, Path]
_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}
_UNESCAPES = {v: k for k, v in _ESCAPES.items()}


def escape(text: str) -> str:
    """`text` with backslash, tab, newline and carriage return written as two-character escapes."""
    return "".join(_ESCAPES.get(ch, ch) for ch in text)


def unescape(text: str) -> str:
    """The inverse of `escape`."""
    return re.sub(r"\\[\\tnr]", lambda m: _UNESCAPES[m.group(0)], text)


def descriptor_paths(output: PathLike) -> tuple[Path, Path, Path]:
    """(descriptors .npy, labels .npy, index .tsv) for an output name (".npy" added when missing)."""
    out = Path(output)
    if out.suffix != ".npy":
        out = out.with_name(out.name + ".npy")
    stem = out.with_suffix("")
    return out, Path(f"{stem}.labels.npy"), Path(f"{stem}.index.tsv")


def save_descriptors(output: PathLike, descriptors: np.ndarray, labels: np.ndarray, paths: Sequence[str],
                     classes: Sequence[str]) -> tuple[Path, Path, Path]:
    """Writes the three files; returns their paths."""
    if not len(descriptors) == len(labels) == len(paths) == len(classes):
        raise ValueError(f"one row per image: {len(descriptors)} descriptors, {len(labels)} labels, {len(paths)} paths, "
                         f"{len(classes)} classes")
    out, labels_file, index_file = descriptor_paths(output)
    np.save(out, descriptors)
    np.save(labels_file, labels)
    rows = "".join(f"{i}\t{escape(str(p))}\t{escape(str(c))}\n" for i, (p, c) in enumerate(zip(paths, classes)))
    index_file.write_text("row\tpath\tclass\n" + rows, encoding="utf-8")
    return out, labels_file, index_file


def load_descriptors(output: PathLike) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """(descriptors, labels, paths, classes) as `save_descriptors` wrote them."""
    out, labels_file, index_file = descriptor_paths(output)
    lines = index_file.read_text(encoding="utf-8").split("\n")
    if lines[0] != "row\tpath\tclass":
        raise ValueError(f"{index_file}: not an apl index file (its first line is {lines[0]!r})")
    paths, classes = [], []
    for n, line in enumerate(lines[1:], start=2):
        if not line:
            continue
        fields = line.split("\t")
        if len(fields) != 3 or fields[0] != str(len(paths)):
            raise ValueError(f"{index_file}, line {n}: expected 'row<TAB>path<TAB>class' for row {len(paths)}, got {line!r}")
        paths.append(unescape(fields[1]))
        classes.append(unescape(fields[2]))
    return np.load(out), np.load(labels_file), paths, classes
