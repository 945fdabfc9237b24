"""Rewrites csrc/cuda/ap_kernels.cu for the CPU emulator (cuda_runtime_api.h beside this file):
`kernel<<<grid, block, smem, stream>>>(args)` becomes `emu::launch(kernel, grid, block, smem,
stream, args)` and `extern __shared__ T name[];` a pointer to the emulator's dynamic shared memory."""
import re
import sys


def transform(src: str) -> str:
    out, n_launch = re.subn(r"(\w+<[^<>;]*>)\s*<<<([^<>]*?)>>>\s*\(", r"emu::launch(\1, \2, ", src)
    out, n_smem = re.subn(
        r"extern\s+__shared__\s+([\w ]+?)\s+(\w+)\[\];",
        r"\1* \2 = reinterpret_cast<\1*>(emu::dyn_smem_ptr());",
        out,
    )
    if n_launch == 0 or n_smem == 0:
        raise SystemExit(f"transform: found {n_launch} launches and {n_smem} extern shared arrays")
    return out


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        text = transform(f.read())
    with open(sys.argv[2], "w") as f:
        f.write(text)
