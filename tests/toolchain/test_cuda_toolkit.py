"""The CUDA toolkit setup.py builds with (apl/toolchain/cuda_toolkit.py), on fake machines: a wrapper
script as the nvcc on the PATH, a symlinked nvcc, a wrong $CUDA_HOME, a toolkit of another CUDA major
version than torch's, and no toolkit at all."""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from apl.toolchain.cuda_toolkit import CudaHomeError, find_cuda_home, nvcc_dryrun_home


def _toolkit(root: Path, version: str = "13.0", header: bool = True) -> Path:
    """A folder shaped like a CUDA toolkit whose bin/nvcc answers --version and --dryrun."""
    (root / "bin").mkdir(parents=True)
    if header:
        (root / "include").mkdir()
        (root / "include" / "cuda_runtime.h").write_text("")
    nvcc = root / "bin" / "nvcc"
    nvcc.write_text(
        "#!/bin/sh\n"
        f'case "$*" in *--dryrun*) echo "#$ _HERE_={root}/bin" >&2;; '
        f'*) echo "Cuda compilation tools, release {version}, V{version}.1";; esac\n')
    nvcc.chmod(nvcc.stat().st_mode | stat.S_IEXEC)
    return root


def _wrapper(folder: Path, target: Path) -> Path:
    """/usr/local/bin/nvcc as on the build machine: a script that execs the real nvcc."""
    folder.mkdir(parents=True, exist_ok=True)
    w = folder / "nvcc"
    w.write_text(f'#!/bin/sh\nexec {target} "$@"\n')
    w.chmod(w.stat().st_mode | stat.S_IEXEC)
    return w


def _run(cmd):
    res = subprocess.run(cmd, capture_output=True, text=True)
    return res.stdout + res.stderr


def _find(tmp_path, on_path=None, env=None, torch_cuda="13.0", guess="torch-guess"):
    which = lambda name: str(on_path) if on_path else None
    if guess == "torch-guess":  # torch's own rule: the folder above the nvcc on the PATH
        guess = str(Path(on_path).parent.parent) if on_path else str(tmp_path / "usr-local-cuda")
    return find_cuda_home(guess, torch_cuda, env=env or {}, which=which, run=_run,
                          defaults=(str(tmp_path / "usr-local-cuda"),))


def test_wrapper_script_on_the_path_is_seen_through(tmp_path):
    real = _toolkit(tmp_path / "cuda-13.0")
    wrapper = _wrapper(tmp_path / "usr-local" / "bin", real / "bin" / "nvcc")
    assert nvcc_dryrun_home(str(wrapper), _run) == str(real)
    found = _find(tmp_path, on_path=wrapper)
    assert found.home == str(real)
    # torch's guess (the folder above the wrapper) was looked at first and passed over
    assert str(tmp_path / "usr-local") in found.looked_at


def test_symlinked_nvcc_is_resolved(tmp_path):
    real = _toolkit(tmp_path / "cuda-13.0")
    (tmp_path / "bin").mkdir()
    link = tmp_path / "bin" / "nvcc"
    link.symlink_to(real / "bin" / "nvcc")
    assert _find(tmp_path, on_path=link).home == str(real)


def test_default_folder_when_no_nvcc_on_the_path(tmp_path):
    _toolkit(tmp_path / "usr-local-cuda")
    assert _find(tmp_path).home == str(tmp_path / "usr-local-cuda")


def test_no_toolkit_says_what_was_looked_at(tmp_path):
    broken = _toolkit(tmp_path / "cuda-13.0", header=False)
    found = _find(tmp_path, on_path=broken / "bin" / "nvcc")
    assert found.home is None
    assert "no CUDA toolkit found" in found.reason
    assert f"{broken}: no include/cuda_runtime.h" in found.reason
    assert "set CUDA_HOME" in found.reason
    assert "no nvcc on the PATH" in _find(tmp_path / "empty").reason


def test_other_cuda_major_than_torch_is_passed_over(tmp_path):
    old = _toolkit(tmp_path / "cuda-12.4", version="12.4")
    new = _toolkit(tmp_path / "usr-local-cuda", version="13.0")
    found = _find(tmp_path, on_path=old / "bin" / "nvcc", torch_cuda="13.0")
    assert found.home == str(new)
    only_old = _find(tmp_path / "x", on_path=old / "bin" / "nvcc", torch_cuda="13.0")
    assert only_old.home is None
    assert "its nvcc is CUDA 12.4, torch was built with CUDA 13.0" in only_old.reason


def test_cuda_home_set_by_the_user_is_used_or_refused(tmp_path):
    mine = _toolkit(tmp_path / "mine")
    other = _toolkit(tmp_path / "usr-local-cuda")
    assert _find(tmp_path, env={"CUDA_HOME": str(mine)}).home == str(mine)
    assert _find(tmp_path, env={"CUDA_PATH": str(mine)}).home == str(mine)
    with pytest.raises(CudaHomeError, match=r"CUDA_HOME=.*/nowhere is not a usable CUDA toolkit \(no such folder\)"):
        _find(tmp_path, env={"CUDA_HOME": str(tmp_path / "nowhere")})
    headerless = _toolkit(tmp_path / "headerless", header=False)
    with pytest.raises(CudaHomeError, match=r"no include/cuda_runtime.h\): set CUDA_HOME to the folder"):
        _find(tmp_path, env={"CUDA_HOME": str(headerless)})
    assert other  # a complete toolkit elsewhere does not override the user's choice


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on the PATH")
def test_this_machine_nvcc_is_found():
    """On the machine itself (CUDA_HOME unset): the nvcc on the PATH leads to a complete toolkit."""
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_HOME", "CUDA_PATH")}
    found = find_cuda_home(str(Path(shutil.which("nvcc")).parent.parent), None, env=env)
    assert found.home is not None, found.reason
    assert (Path(found.home) / "include" / "cuda_runtime.h").is_file()
