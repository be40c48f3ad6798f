"""The ``weightscope`` command: subcommands live in weightscope/commands/, one module each.

Each command module exposes ``register(subparsers)``, which adds its parser (built from the shared option helpers
in weightscope.commands) and sets ``func(args) -> int``. Exit status: 0 done; 2 bad input or environment (a
WeightscopeError or an OS failure: one line on stderr, no traceback; argparse usage errors too); 1 a bug.
Only the chosen command's run() imports torch, so ``--help`` answers at once.
"""
from __future__ import annotations

import contextlib
import importlib
import re
import sys

from .commands import EXIT_CODES, Parser, run_inputs
from .core.errors import WeightscopeError
from .core.fileio import reading

COMMANDS = ("inspect", "edit", "compare", "sing", "depth", "similarity", "vocab")


def build_parser() -> Parser:
    parser = Parser(
        prog="weightscope",
        description="Explain what a CLIP vision transformer has learned from its weights alone. "
                    "With no command: inspect the bundled shapes-world model.",
        epilog=EXIT_CODES,
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
    for p in sub.choices.values():
        p.epilog = f"{p.epilog}\n\n{EXIT_CODES}" if p.epilog else EXIT_CODES
    return parser


def subparsers(parser: Parser) -> dict[str, Parser]:
    """{command name: its parser}."""
    return dict(parser._subparsers._group_actions[0].choices)


# the library's messages name Python arguments; on the command line the same advice names the options
_CLI_SPELLINGS = (
    (re.compile(r"load_model\(NAME, checkpoint=PATH\), on the command line "), ""),
    (re.compile(r"pass trust_checkpoint=True \(CLI: --trust-checkpoint\)"), "pass --trust-checkpoint"),
    (re.compile(r"\bcheckpoint=PATH\b"), "--checkpoint PATH"),
    (re.compile(r"\buse checkpoint=(?=$|[;,. )])"), "use --checkpoint PATH"),
    (re.compile(r"\bpass overwrite=True\b"), "pass --overwrite"),
    (re.compile(r"\btrust_checkpoint=True\b"), "--trust-checkpoint"),
)


def cli_spelling(message: str) -> str:
    """A library message with its Python spellings (``checkpoint=PATH``, ``overwrite=True`` ...) given as options."""
    for pattern, repl in _CLI_SPELLINGS:
        message = pattern.sub(repl, message)
    return message


@contextlib.contextmanager
def quiet_third_party_logs():
    """Inside the block, third-party log lines (open_clip logs through the root logger, huggingface_hub its
    retries, transformers its notices) are not shown: next to the command's own one-line messages they are noise,
    and their errors reach the user as ours. The levels are restored afterwards (main is also called in-process)."""
    import logging

    loggers = [logging.getLogger(n) for n in ("", "huggingface_hub", "transformers", "timm", "open_clip", "urllib3")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv = ["inspect", *argv]  # bare `weightscope` inspects the bundled model
    args, extra = parser.parse_known_args(argv)
    if extra:  # the command's own parser knows which option names are close
        subparsers(parser)[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        with reading(run_inputs(args)), quiet_third_party_logs():  # a command cannot replace what it reads
            return int(args.func(args) or 0)
    except WeightscopeError as err:
        print(f"weightscope {args.command}: error: {cli_spelling(str(err))}", file=sys.stderr)
        return 2
    except OSError as err:  # the environment, not the code: a folder that vanished, a disk that filled ...
        where = f"{err.filename}: " if err.filename else ""
        print(f"weightscope {args.command}: error: {where}{err.strerror or err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"weightscope {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
