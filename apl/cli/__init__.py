"""The `apl` command (also `python -m apl`): one module per group of subcommands.

- `train_cmd`: `apl train` (one process or several under torchrun);
- `eval_cmd`: `apl eval`, `apl extract`;
- `show_cmd`: `apl show` (pictures of the top results of a few queries);
- `selftest_cmd`: `apl selftest`;
- `tools_cmd`: `apl demo`, `apl check-images`.

The benchmarks are scripts of the source tree (`python -m benchmarks.bench_loss`), not commands.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional

from . import eval_cmd, selftest_cmd, show_cmd, tools_cmd, train_cmd
from .common import USER_ERRORS, HelpFormatter


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="apl", formatter_class=HelpFormatter,
                                description="Train and evaluate image retrieval with the listwise AP loss.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    tools_cmd.add_demo(sub)
    train_cmd.add(sub)
    eval_cmd.add(sub)
    show_cmd.add(sub)
    tools_cmd.add_check_images(sub)
    selftest_cmd.add(sub)
    return p


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    a = parser.parse_args(argv)
    a.argv = argv
    try:
        return a.func(a)
    except USER_ERRORS as exc:
        # Bad input and faults the user can act on: one line (or a short list), no traceback.
        print(f"apl {a.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = "; the last checkpoint is safe: continue with the same command and --resume" if a.command == "train" else ""
        print(f"apl {a.command}: interrupted{hint}", file=sys.stderr)
        return 130
