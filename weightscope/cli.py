"""The ``weightscope`` command: subcommands live in weightscope/commands/, one module each.

Each command module exposes ``register(subparsers)``, which adds its parser and sets ``func(args) -> int``.
A WeightscopeError becomes one line on stderr and exit status 2; argparse usage errors also exit 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from .errors import WeightscopeError

COMMANDS = ("inspect", "edit", "compare", "sing", "depth", "similarity")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="weightscope",
        description="Explain what a CLIP vision transformer has learned from its weights alone.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f".commands.{name}", __package__)
        except ModuleNotFoundError as err:
            if err.name != f"{__package__}.commands.{name}":
                raise
            continue  # a command whose module is not there yet
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["inspect", *(argv or [])])  # bare `weightscope` inspects the bundled model
    try:
        return int(args.func(args) or 0)
    except WeightscopeError as err:
        print(f"weightscope {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
