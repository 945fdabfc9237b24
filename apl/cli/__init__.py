"""The `apl` command (also `python -m apl`): one module per group of subcommands.

- `train_cmd`: `apl train` (one process or several under torchrun);
- `eval_cmd`: `apl eval`, `apl extract`;
- `show_cmd`: `apl show` (pictures of the top results of a few queries);
- `selftest_cmd`: `apl selftest`;
- `demo_cmd`: `apl demo`;
- `check_images_cmd`: `apl check-images`.

The benchmarks are scripts of the source tree (`python -m benchmarks.bench_loss`), not commands.
Every command but `selftest` needs the extra apl[train]; without it, the command says so in one line.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional

from ..extras import MissingExtraError, require
from .common import USER_ERRORS, HelpFormatter

# (command, module, the module's function that adds it, the extra it needs), in the order of `apl --help`
COMMANDS = (("demo", "demo_cmd", "add", "train"), ("train", "train_cmd", "add", "train"),
            ("eval", "eval_cmd", "add", "train"), ("extract", "eval_cmd", None, "train"),
            ("show", "show_cmd", "add", "train"), ("check-images", "check_images_cmd", "add", "train"),
            ("selftest", "selftest_cmd", "add", None))


def _unavailable(sub, name: str, error: MissingExtraError) -> None:
    """A command whose extra is not installed: it answers with the one line that names the extra."""
    def run(a):
        raise error
    # no option prefix: whatever follows the command is accepted, so the answer is the missing extra
    p = sub.add_parser(name, help=f"(needs apl[train]) {name}", add_help=False, prefix_chars="\0")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=run)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="apl", formatter_class=HelpFormatter,
                                description="Train and evaluate image retrieval with the listwise AP loss.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module, adder, extra in COMMANDS:
        try:
            if extra:
                require(extra, f"apl {name}")
        except MissingExtraError as exc:
            _unavailable(sub, name, exc)
            continue
        if adder is not None:
            getattr(importlib.import_module(f".{module}", __name__), adder)(sub)
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
