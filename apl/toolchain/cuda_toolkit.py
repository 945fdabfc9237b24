"""Which CUDA toolkit setup.py builds the CUDA kernels with (tested without a GPU). Loaded by
setup.py from its path: it imports the standard library only, not torch.

torch guesses the toolkit once, at import, from $CUDA_HOME / $CUDA_PATH, else the folder above
the `nvcc` on the PATH, else /usr/local/cuda. The guess is wrong when the `nvcc` on the PATH is a
wrapper script (/usr/local/bin/nvcc that execs /usr/local/cuda-13.0/bin/nvcc gives /usr/local,
which has no headers), and then the first CUDA source fails with "cuda_runtime.h: No such file".
`find_cuda_home` checks each candidate for the files a build needs and says why it found none.

- $CUDA_HOME or $CUDA_PATH set: the user chose; used when complete, else an error naming it.
- Otherwise the first complete one of: torch's guess, where the `nvcc` on the PATH really lives
  (symlinks resolved, and nvcc's own `--dryrun` report of its folder, which sees through wrapper
  scripts), /usr/local/cuda. Candidates whose nvcc has another CUDA major version than torch are
  passed over (torch refuses to build with them).
- None complete: no toolkit, and a reason listing what was looked at.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

HEADER = os.path.join("include", "cuda_runtime.h")
NVCC = os.path.join("bin", "nvcc")


class CudaHomeError(RuntimeError):
    """$CUDA_HOME (or $CUDA_PATH) names a folder that is not a usable CUDA toolkit."""


@dataclass
class Toolkit:
    """The outcome of the search: `home` is None when no usable toolkit was found, and `reason`
    then says what was looked at and why each was refused."""

    home: Optional[str]
    reason: str = ""
    looked_at: list[str] = field(default_factory=list)


def nvcc_version(nvcc: str, run: Callable[[list[str]], str]) -> Optional[tuple[int, int]]:
    """(major, minor) of an nvcc binary, None when it does not answer."""
    m = re.search(r"release (\d+)\.(\d+)", run([nvcc, "--version"]))
    return (int(m.group(1)), int(m.group(2))) if m else None


def nvcc_dryrun_home(nvcc: str, run: Callable[[list[str]], str]) -> Optional[str]:
    """The toolkit folder an nvcc reports for itself (`_HERE_=<toolkit>/bin` in the steps that
    `--dryrun` lists for preprocessing an empty file), right even when `nvcc` is a wrapper script."""
    m = re.search(r"_HERE_=(\S+)", run([nvcc, "--dryrun", "-E", "-x", "cu", os.devnull]))
    return os.path.dirname(m.group(1).rstrip("/")) if m else None


def _run(cmd: list[str]) -> str:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return ""
    return res.stdout + res.stderr


def _problem(home: str, torch_cuda: Optional[str], run: Callable[[list[str]], str]) -> Optional[str]:
    """Why `home` cannot build the kernels, or None when it can."""
    if not os.path.isdir(home):
        return "no such folder"
    if not os.path.isfile(os.path.join(home, HEADER)):
        return f"no {HEADER}"
    nvcc = os.path.join(home, NVCC)
    if not os.access(nvcc, os.X_OK):
        return f"no {NVCC}"
    if torch_cuda:
        found = nvcc_version(nvcc, run)
        want = int(torch_cuda.split(".")[0])
        if found is not None and found[0] != want:
            return f"its nvcc is CUDA {found[0]}.{found[1]}, torch was built with CUDA {torch_cuda}"
    return None


def find_cuda_home(torch_guess: Optional[str], torch_cuda: Optional[str] = None,
                   env: Optional[dict] = None, which: Callable[[str], Optional[str]] = shutil.which,
                   run: Callable[[list[str]], str] = _run,
                   defaults: Sequence[str] = ("/usr/local/cuda",)) -> Toolkit:
    """The CUDA toolkit to build with.

    Args:
        torch_guess: torch.utils.cpp_extension.CUDA_HOME (torch's own guess; may be None).
        torch_cuda: torch.version.cuda, e.g. "13.0"; a toolkit of another major version is passed over.
        env: the environment (default os.environ); $CUDA_HOME, then $CUDA_PATH, are the user's choice.
        which, run, defaults: how to find `nvcc` on the PATH, run a command (its output), and the
            usual install folders; parameters so that tests can fake a machine.

    Raises:
        CudaHomeError: $CUDA_HOME or $CUDA_PATH is set to a folder that cannot build the kernels.
    """
    env = os.environ if env is None else env
    for var in ("CUDA_HOME", "CUDA_PATH"):
        chosen = env.get(var)
        if chosen:
            problem = _problem(chosen, torch_cuda, run)
            if problem:
                raise CudaHomeError(
                    f"{var}={chosen} is not a usable CUDA toolkit ({problem}): set {var} to the folder "
                    f"that holds bin/nvcc and {HEADER}, or unset it (or set APL_CPU_ONLY=1 to build "
                    "without the CUDA kernels)")
            return Toolkit(os.path.normpath(chosen), looked_at=[chosen])

    candidates: list[str] = []
    if torch_guess:
        candidates.append(torch_guess)
    on_path = which("nvcc")
    if on_path:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(on_path))))
        reported = nvcc_dryrun_home(on_path, run)
        if reported:
            candidates.append(reported)
    candidates += list(defaults)

    refused = []
    seen = set()
    for home in candidates:
        home = os.path.normpath(home)
        if home in seen:
            continue
        seen.add(home)
        problem = _problem(home, torch_cuda, run)
        if problem is None:
            return Toolkit(home, looked_at=list(seen))
        refused.append(f"{home}: {problem}")
    where = "; ".join(([] if on_path else ["no nvcc on the PATH"]) + refused)
    return Toolkit(None, reason=f"no CUDA toolkit found ({where}); set CUDA_HOME to the folder that holds "
                                f"bin/nvcc and {HEADER}", looked_at=list(seen))
