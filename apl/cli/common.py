"""What the subcommands share: the help formatter, the errors shown as one line, and the
detection of options given explicitly on the command line."""
from __future__ import annotations

import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each option's default, keeps description paragraphs as written."""

    def _get_help_string(self, action):
        # An option whose default depends on another one says so in its own words.
        if "(default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


# Raised for bad input or faults a user can fix (missing files, corrupt images, unknown names,
# missing optional packages; a bad checkpoint is a ValueError); anything else is a bug and keeps its
# traceback.
USER_ERRORS = (ValueError, FileNotFoundError, TypeError, ImportError, NotADirectoryError, IsADirectoryError,
               PermissionError)

_UNSET = object()


def explicit_options(parser: argparse.ArgumentParser, args: list[str]) -> set[str]:
    """The destinations of the options that `args` (the subcommand's own arguments) sets."""
    ns = argparse.Namespace(**{act.dest: _UNSET for act in parser._actions if act.dest != argparse.SUPPRESS})
    parser.parse_known_args(args, ns)
    return {k for k, v in vars(ns).items() if v is not _UNSET}


def after_command(argv: list[str], command: str) -> list[str]:
    return argv[argv.index(command) + 1:] if command in argv else []


def add_data_options(p: argparse.ArgumentParser) -> None:
    """--dataset/--eval-dataset/--root/--eval-root of the commands that read a checkpoint, whose own
    datasets are the defaults (`apl train`'s come from TrainConfig's field descriptions)."""
    import dataclasses

    from ..train.config import DATASETS_HELP, TrainConfig  # needs apl[train], as the commands that call this

    helps = {f.name: f.metadata["help"] for f in dataclasses.fields(TrainConfig)}

    p.add_argument("--dataset", default=None,
                   help="the dataset to read instead of the checkpoint's: " + DATASETS_HELP + "; with an image list or "
                        "folder, give --eval-dataset too")
    p.add_argument("--eval-dataset", default=None,
                   help="the held-out images to read instead of the checkpoint's (list file or folder)")
    p.add_argument("--root", default=None, help=helps["root"])
    p.add_argument("--eval-root", default=None, help=helps["eval_root"])


def add_loader_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, default=None,
                   help="data-loader worker processes (default: 0 for the digits, else CPU cores - 1, at most 8); results do not depend on it")
    p.add_argument("--prefetch", type=int, default=2, help="batches each worker reads ahead")
