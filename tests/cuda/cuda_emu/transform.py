"""Rewrites csrc/cuda/ap_kernels.cu (or a test kernel) for the CPU emulator (cuda_runtime_api.h
beside this file):
- `kernel<<<grid, block, smem, stream>>>(args)` becomes `emu::launch(kernel, grid, block, smem,
  stream, args)`;
- `extern __shared__ T name[];` becomes a pointer to the emulator's dynamic shared memory;
- `__shared__ T a[X][Y], b;` (static shared variables) becomes `auto& a = emu::block_static<T[X][Y],
  id>(); auto& b = ...;`: storage the emulator poisons before every block."""
import re
import sys

_STATIC = re.compile(r"(?<!extern )__shared__\s+([^;]+);")
_FIRST = re.compile(r"^\s*(.+)\b([A-Za-z_]\w*)\s*((?:\[[^\]]+\])*)\s*$")
_DECL = re.compile(r"\s*([A-Za-z_]\w*)\s*((?:\[[^\]]+\])*)\s*$")


def _split_declarators(text: str) -> list[str]:
    """`a[k][k + 1], b[k]` -> ["a[k][k + 1]", "b[k]"] (commas inside brackets are kept)."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "[(<"
        depth -= ch in "])>"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return parts + [cur]


def transform(src: str, need_extern: bool = True) -> str:
    out, n_launch = re.subn(r"(\w+(?:<[^<>;]*>)?)\s*<<<([^<>]*?)>>>\s*\(", r"emu::launch(\1, \2, ", src)
    out, n_smem = re.subn(
        r"extern\s+__shared__\s+([\w ]+?)\s+(\w+)\[\];",
        r"\1* \2 = reinterpret_cast<\1*>(emu::dyn_smem_ptr());",
        out,
    )
    counter = [0]

    def static(m: re.Match) -> str:
        parts = _split_declarators(m.group(1))
        first = _FIRST.match(parts[0])
        if first is None:
            raise SystemExit(f"transform: cannot parse the __shared__ declaration {m.group(0)!r}")
        typ = first.group(1).strip()
        stmts = []
        for d in [first.group(2) + first.group(3)] + parts[1:]:
            dm = _DECL.match(d)
            if dm is None:
                raise SystemExit(f"transform: cannot parse the __shared__ declarator {d!r}")
            counter[0] += 1
            stmts.append(f"auto& {dm.group(1)} = emu::block_static<{typ}{dm.group(2)}, {counter[0]}>();")
        return " ".join(stmts)

    out = _STATIC.sub(static, out)
    if n_launch == 0 or (need_extern and n_smem == 0):
        raise SystemExit(f"transform: found {n_launch} launches and {n_smem} extern shared arrays")
    return out


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        text = transform(f.read())
    with open(sys.argv[2], "w") as f:
        f.write(text)
