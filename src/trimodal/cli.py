"""The `trimodal` command: one subcommand per pipeline stage.

Each stage's arguments and body live in `trimodal.commands.<stage>`; this module only builds
the parser from them and runs the chosen one through the single error path: a
`trimodal.errors.UserError` (and the OSError/ValueError of reading what the user named) is
printed as `trimodal <stage>: error: <message>` with a non-zero exit, never as a traceback;
`--debug` (anywhere on the line) shows the traceback instead. Library code never imports this
module.
"""

from __future__ import annotations

import argparse
import logging
import sys

from trimodal.commands import bench, demo, pack, sample, shards, study, tokenize, tokenizer, train, vocab
from trimodal.errors import UserError

log = logging.getLogger("trimodal")

#: Subcommands in the order `--help` lists them (the order of the pipeline).
STAGES = (tokenizer, tokenize, vocab, pack, shards, train, sample, bench, demo, study)

#: Exit status of a user error, per subcommand: 1 where scripts already rely on it, else 2
#: (argparse's status for a bad command line).
ERROR_EXIT = {"tokenizer": 1, "pack": 1, "shards": 1}
DEFAULT_ERROR_EXIT = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trimodal", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error instead of a one-line message (any position)")
    sub = parser.add_subparsers(dest="command", required=True)
    for stage in STAGES:
        stage.add_parser(sub)
    return parser


def _message(err: BaseException) -> str:
    """The user-facing text of an error: its message, on one line."""
    text = " ".join(str(err).split())
    if isinstance(err, OSError) and err.filename is not None and str(err.filename) not in text:
        text = f"{err.filename}: {text}"
    return text or type(err).__name__


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.run(args)
    except (UserError, OSError, ValueError) as err:
        if debug:
            raise
        print(f"{args.stage}: error: {_message(err)}", file=sys.stderr)
        return ERROR_EXIT.get(args.command, DEFAULT_ERROR_EXIT)


if __name__ == "__main__":
    sys.exit(main())
