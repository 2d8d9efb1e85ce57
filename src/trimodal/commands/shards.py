"""`trimodal shards {verify,inspect}`: check shard sets against their manifests, or look inside."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("shards", help="verify or inspect WebDataset shards")
    ssub = p.add_subparsers(dest="action", required=True)
    v = ssub.add_parser("verify", help="check shard sets against their manifests (exit 1 on problems)")
    v.add_argument("paths", nargs="+", metavar="PATH",
                   help="shard-set folder, manifest.json, or a `trimodal pack` output folder")
    v.add_argument("--vocab", default=None, help="vocab.json to check against (default: the one beside)")
    v.set_defaults(run=verify, stage=v.prog)
    i = ssub.add_parser("inspect", help="print a few samples decoded back into readable spans")
    i.add_argument("path", metavar="PATH", help="shard-set folder or manifest.json")
    i.add_argument("-n", type=int, default=3, help="how many samples (default 3)")
    i.add_argument("--vocab", default=None, help="vocab.json (default: the one beside the manifest)")
    i.add_argument("--text-tokenizer", default=None,
                   help="SentencePiece model of the text tokenizer, to print text spans as text")
    i.set_defaults(run=inspect, stage=i.prog)


def verify(args: argparse.Namespace) -> int:
    from trimodal.packing.vocab import Vocab
    from trimodal.shards.pack import expand_sets
    from trimodal.shards.verify import verify_shards

    vocab = Vocab.load(args.vocab) if args.vocab else None
    ok = True
    for path in [p for arg in args.paths for p in expand_sets(arg)]:
        report = verify_shards(path, vocab)
        print("\n".join(report.lines()))
        ok = ok and report.ok
    return 0 if ok else 1


def inspect(args: argparse.Namespace) -> int:
    from trimodal.packing.vocab import Vocab
    from trimodal.shards.manifest import read_manifest
    from trimodal.shards.verify import describe_sample, iter_shard_samples, load_vocab_for

    vocab = Vocab.load(args.vocab) if args.vocab else None
    manifest = read_manifest(args.path)
    vocab = load_vocab_for(manifest, vocab)
    text_decoder = None
    if args.text_tokenizer:
        from trimodal.tokenizers.spec import load_for

        tok = load_for("text", args.text_tokenizer)
        text_decoder = lambda ids: tok.decode([ids])[0]  # noqa: E731
    for n, (key, tokens, meta) in enumerate(iter_shard_samples(manifest, vocab)):
        if n >= args.n:
            break
        print(describe_sample(key, tokens, meta, vocab, text_decoder))
    return 0
