"""The CPU emulator of CUDA (tests/cuda/cuda_emu/) enforces what a GPU would: deliberately broken
kernels (cuda_emu/emu_broken.cu) for each rule (launch limits, shared memory sizes, poisoned shared
memory, shuffled block order, a watchdog that turns a deadlock at a barrier into an error). Without
these, a kernel passing the emulation would prove less."""
from __future__ import annotations

import os
import subprocess

import pytest

from cuda_emulation import EMU_DIR, build_program


@pytest.fixture(scope="module")
def broken_kernels(tmp_path_factory):
    """The broken kernels, rewritten by transform.py and compiled against the emulator; returns a
    runner of one case (a subprocess, so that a hang cannot take the test session with it)."""
    exe = build_program(EMU_DIR / "emu_broken.cu", tmp_path_factory.mktemp("emu_broken"))

    def run(case: str, **env) -> dict[str, dict[str, str]] | list[int]:
        r = subprocess.run([str(exe), case], capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, **env))
        assert r.returncode == 0, r.stdout + r.stderr
        if r.stdout.startswith("values:"):
            return [int(v) for v in r.stdout.split()[1:]]
        out = {}
        for line in r.stdout.splitlines():
            name, rest = line.split(" ", 1)
            fields, msg = rest.split(" msg=", 1)
            out[name] = dict(kv.split("=") for kv in fields.split())
            out[name]["msg"] = msg
        return out

    return run


CUDA_INVALID_VALUE, CUDA_INVALID_CONFIGURATION, CUDA_LAUNCH_TIMEOUT = "1", "9", "702"


def _assert_launch_error(r: dict, code: str, msg: str):
    # cudaPeekAtLastError keeps the error, cudaGetLastError returns and clears it; nothing ran
    assert (r["peek"], r["peek2"], r["get"], r["after"]) == (code, code, code, "0"), r
    assert msg in r["msg"]


def test_emulator_accepts_launches_at_the_limits(broken_kernels):
    r = broken_kernels("limits_ok")
    assert r["smem48k_1024threads"]["peek"] == "0" and r["block_z64"]["peek"] == "0"
    assert r["block_z64"]["runs"] == str(3 * 2 * (2 * 64))  # threads with x == 0, in all 6 blocks


def test_emulator_rejects_too_many_threads(broken_kernels):
    r = broken_kernels("threads")
    _assert_launch_error(r["threads1025"], CUDA_INVALID_CONFIGURATION, "at most 1024 threads")
    _assert_launch_error(r["block_z65"], CUDA_INVALID_CONFIGURATION, "at most 1024 threads")
    assert r["block_z65"]["runs"] == "0"


def test_emulator_rejects_grid_beyond_limits(broken_kernels):
    r = broken_kernels("grid")
    _assert_launch_error(r["grid_y70000"], CUDA_INVALID_CONFIGURATION, "y, z <= 65535")
    _assert_launch_error(r["grid_z65536"], CUDA_INVALID_CONFIGURATION, "y, z <= 65535")
    assert r["grid_z65536"]["runs"] == "0"


def test_emulator_rejects_too_much_shared_memory(broken_kernels):
    _assert_launch_error(broken_kernels("dynamic_smem")["dynamic"], CUDA_INVALID_VALUE, "shared memory")
    r = broken_kernels("static_smem")
    assert r["static40k_dynamic8k"]["peek"] == "0"  # 40 KiB static + 8 KiB dynamic: at the limit
    _assert_launch_error(r["static40k_dynamic9k"], CUDA_INVALID_VALUE, "static + dynamic")
    assert r["static40k_dynamic9k"]["runs"] == "1"  # the rejected launch did not run


POISON32 = 0xCDCDCDCD


def test_emulator_poisons_static_shared_memory(broken_kernels):
    assert broken_kernels("uninitialised") == [POISON32] * (3 * 64)  # never written: poison, not 0
    assert broken_kernels("carry_over") == [POISON32] * 8  # no value survives from another block


def test_emulator_shuffles_block_order(broken_kernels):
    order = broken_kernels("order")
    assert sorted(order) == list(range(64)) and order != list(range(64))
    assert broken_kernels("order", APL_EMU_SEED="7") != order  # the seed changes the order


def test_emulator_watchdog_turns_a_deadlock_into_an_error(broken_kernels):
    r = broken_kernels("deadlock", APL_EMU_WATCHDOG_S="1")
    _assert_launch_error(r["deadlock"], CUDA_LAUNCH_TIMEOUT, "barrier deadlock")
    assert "a __syncthreads not reached by every thread" in r["deadlock"]["msg"]
    assert r["after_deadlock"]["peek"] == "0" and r["after_deadlock"]["runs"] == "1"
