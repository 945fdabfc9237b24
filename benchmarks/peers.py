"""The loss code of other projects, run beside apl's in the parity tests and the benchmarks (never
copied into apl).

Set APL_PEER_REPOS to folders holding them, as a checkout per repository (`<folder>/<name>/...`)
or as bare git snapshots (`<folder>/<owner>+<name>/repo`, what the tool that fetched them for this
project writes); a test or benchmark row that needs one that is missing is skipped. The
repositories: Andrew-Brown1/Smooth_AP, yash0307/RecallatK_surrogate, kunhe/FastAP-metric-learning.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Iterator, Optional

import torch


def source(repo: str, path: str) -> Optional[str]:
    """The text of `path` in `repo` ("owner/name"), or None when no folder of APL_PEER_REPOS has it."""
    owner, name = repo.split("/")
    for folder in filter(None, os.environ.get("APL_PEER_REPOS", "").split(os.pathsep)):
        for checkout in (Path(folder) / name, Path(folder) / f"{owner}+{name}"):
            if (checkout / path).is_file():
                return (checkout / path).read_text()
        bare = Path(folder) / f"{owner}+{name}" / "repo"
        if bare.is_dir():
            r = subprocess.run(["git", "--git-dir", str(bare), "show", f"HEAD:{path}"], capture_output=True, text=True)
            if r.returncode == 0:
                return r.stdout
    return None


def load(repo: str, path: str) -> types.ModuleType:
    """`path` of `repo` imported as a module; LookupError when it is not available."""
    text = source(repo, path)
    if text is None:
        raise LookupError(f"{repo}:{path} is not available (set APL_PEER_REPOS to a folder that holds {repo})")
    name = f"peer_{repo.replace('/', '_').replace('-', '_')}_{Path(path).stem}"
    module = types.ModuleType(name)
    module.__file__ = f"<{repo}:{path}>"
    exec(compile(text, module.__file__, "exec"), module.__dict__)
    sys.modules[name] = module
    return module


@contextlib.contextmanager
def as_torch_1_on_cpu() -> Iterator[None]:
    """The authors' code was written for torch 1.x on a GPU: `.cuda()` calls and uint8 masks. On the
    CPU and a current torch, `.cuda()` keeps the tensor where it is and `.byte()` gives the bool mask
    that masked_fill now requires; nothing else of their code is touched."""
    cuda, byte = torch.Tensor.cuda, torch.Tensor.byte
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.Tensor.byte = lambda self, *a, **k: self.bool()
    try:
        yield
    finally:
        torch.Tensor.cuda, torch.Tensor.byte = cuda, byte
