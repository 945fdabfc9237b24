"""The first compiler error of a failed `pip install -v` build log, for install.sh: pip ends a failed
build with its own traceback and "subprocess-exited-with-error", which hide what went wrong.

    python apl/toolchain/build_log.py BUILD.LOG     # prints the line, or nothing

Run by path (the package may not be importable when its build failed): standard library only.
"""
from __future__ import annotations

import re
import sys
from typing import Iterable, Optional

# gcc/clang "file:line:col: (fatal) error: ...", nvcc "file(line): error: ...", the linker's
# "undefined reference", and setup.py's own messages. pip's "error: subprocess-exited-with-error"
# and Python tracebacks come after the compiler's lines and are not matched.
_PATTERNS = (
    re.compile(r"^\S.*?:\d+(?::\d+)?: (?:fatal )?error: .+"),
    re.compile(r"^\S.*?\(\d+\): (?:catastrophic )?error: .+"),
    re.compile(r"^\S.*?undefined reference to .+"),
    re.compile(r"^apl setup\.py: error: .+"),
    re.compile(r"^(?:nvcc fatal|c\+\+: fatal error|g\+\+: fatal error|cc1plus: fatal error).*"),
)


def first_error(lines: Iterable[str]) -> Optional[str]:
    """The first line of a build log that states a compiler, linker or setup.py error (pip's
    indentation removed), or None when there is none."""
    for raw in lines:
        line = raw.strip()
        if any(p.match(line) for p in _PATTERNS):
            return line
    return None


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8", errors="replace") as f:
        line = first_error(f)
    if line:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
