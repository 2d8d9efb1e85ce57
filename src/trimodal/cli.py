"""The `trimodal` command: one subcommand per pipeline stage.

Each stage has an `_add_<stage>` function (its arguments) and a `_run_<stage>` function (what it
does); library code never imports this module. Stages that are not built yet say so and exit
with status 2 rather than pretending to work.
"""

from __future__ import annotations

import argparse
import logging
import sys

log = logging.getLogger("trimodal")



def _not_built(what: str, issue: int) -> int:
    print(f"trimodal: `{what}` is not built yet (tracked in issue {issue}).", file=sys.stderr)
    return 2


# --- tokenizer training ----------------------------------------------------------------
def _add_tokenizer(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tokenizer", help="train a text, image or audio tokenizer")
    tsub = p.add_subparsers(dest="kind", required=True)
    for kind in ("text", "image", "audio"):
        t = tsub.add_parser(kind, help=f"{kind} tokenizer").add_subparsers(dest="action", required=True)
        t.add_parser("train", help=f"train a {kind} tokenizer")


def _run_tokenizer(args: argparse.Namespace) -> int:
    return _not_built(f"tokenizer {args.kind} {args.action}", {"text": 3, "image": 5, "audio": 6}[args.kind])


# --- tokenization jobs -----------------------------------------------------------------
def _add_tokenize(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tokenize", help="encode a raw corpus into token tables")
    p.add_argument("kind", choices=["text", "image", "audio"])


def _run_tokenize(args: argparse.Namespace) -> int:
    return _not_built(f"tokenize {args.kind}", {"text": 3, "image": 5, "audio": 6}[args.kind])


# --- packing ---------------------------------------------------------------------------
def _add_pack(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("pack", help="pack token tables into fixed-length sequences")


def _run_pack(args: argparse.Namespace) -> int:
    return _not_built("pack", 3)


# --- shards ----------------------------------------------------------------------------
def _add_shards(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("shards", help="write, verify or inspect WebDataset shards")
    ssub = p.add_subparsers(dest="action", required=True)
    ssub.add_parser("verify", help="check a shard set")
    ssub.add_parser("inspect", help="print a few decoded samples")


def _run_shards(args: argparse.Namespace) -> int:
    return _not_built(f"shards {args.action}", 4)


# --- training and sampling -------------------------------------------------------------
def _add_train(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("train", help="train a masked diffusion model on shards")


def _run_train(args: argparse.Namespace) -> int:
    return _not_built("train", 7)


def _add_sample(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="sample text, images (t2i) or speech (t2s)")
    p.add_argument("task", choices=["text", "t2i", "t2s", "i2t", "s2t"])


def _run_sample(args: argparse.Namespace) -> int:
    return _not_built(f"sample {args.task}", 8)


# --- benchmarks, demo, studies ---------------------------------------------------------
def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="reconstruction benchmarks")
    p.add_argument("what", choices=["recon"])


def _run_bench(args: argparse.Namespace) -> int:
    return _not_built(f"bench {args.what}", 9)


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline on the bundled demo corpus")
    p.add_argument("--out", default="demo_out", help="output folder (stages are resumable)")


def _run_demo(args: argparse.Namespace) -> int:
    return _not_built("demo", 10)


def _add_study(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("study", help="design-space sweeps and scaling-law fits")


def _run_study(args: argparse.Namespace) -> int:
    return _not_built("study", 12)


STAGES = {
    "tokenizer": (_add_tokenizer, _run_tokenizer),
    "tokenize": (_add_tokenize, _run_tokenize),
    "pack": (_add_pack, _run_pack),
    "shards": (_add_shards, _run_shards),
    "train": (_add_train, _run_train),
    "sample": (_add_sample, _run_sample),
    "bench": (_add_bench, _run_bench),
    "demo": (_add_demo, _run_demo),
    "study": (_add_study, _run_study),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trimodal", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for add, _ in STAGES.values():
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return STAGES[args.command][1](args)


if __name__ == "__main__":
    sys.exit(main())
