"""`trimodal tokenizer {text,image,audio} train`: train a tokenizer on a corpus."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging

log = logging.getLogger("trimodal")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tokenizer", help="train a text, image or audio tokenizer")
    tsub = p.add_subparsers(dest="kind", required=True)
    for kind, (add_args, run) in {"text": (_text_args, _train_text), "image": (_image_args, _train_image),
                                  "audio": (_audio_args, _train_audio)}.items():
        t = tsub.add_parser(kind, help=f"{kind} tokenizer").add_subparsers(dest="action", required=True)
        train = t.add_parser("train", help=f"train a {kind} tokenizer")
        add_args(train)
        train.set_defaults(run=run, stage=train.prog)


def _text_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--corpus", required=True,
                   help="text corpus: folder of .txt, .jsonl file(s), .parquet file(s) or HF save_to_disk folder")
    p.add_argument("--format", default="auto", choices=["auto", "txt", "jsonl", "parquet", "hf"])
    p.add_argument("--field", default="text", help="JSON field / parquet or dataset column")
    p.add_argument("--split", default=None, help="split of an HF DatasetDict")
    p.add_argument("--vocab-size", type=int, default=32000)
    p.add_argument("--model-type", default="bpe", choices=["bpe", "unigram"])
    p.add_argument("--config", default=None,
                   help="YAML/JSON TextTokenizerConfig (overrides --vocab-size/--model-type)")
    p.add_argument("--soft-vocab-limit", action="store_true",
                   help="allow fewer pieces than --vocab-size on a small corpus")
    p.add_argument("--out", required=True, help="where to write the SentencePiece model (fsspec path)")


def _train_text(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from trimodal import config as cfgmod
    from trimodal.corpora.text import iter_texts, open_text_corpus
    from trimodal.tokenizers.text import TextTokenizer, TextTokenizerConfig

    if args.config:
        cfg = cfgmod.load(args.config, TextTokenizerConfig)
    else:
        cfg = TextTokenizerConfig(vocab_size=args.vocab_size, model_type=args.model_type,
                                  hard_vocab_limit=not args.soft_vocab_limit)
    corpus = open_text_corpus(args.corpus, format=args.format, field=args.field, split=args.split)
    skips: dict[str, int] = {}
    texts = tqdm(iter_texts(corpus, skips), desc="training text tokenizer", unit="doc")
    tok = TextTokenizer.train(texts, config=cfg)
    tok.save(args.out)
    log.info("wrote %s (%d pieces, hash %s); skipped %s", args.out, tok.vocab_size, tok.hash, skips or "none")
    print(json.dumps({"model": args.out, "name": tok.name, "vocab_size": tok.vocab_size,
                      "hash": tok.hash, "skipped": skips}))
    return 0


def _image_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="YAML/JSON ImageTrainConfig (model, loss, optim, data, ...)")
    p.add_argument("--preset", default=None, choices=["fsq", "lfq", "movq"],
                   help="start from the small CPU preset of this quantizer (a --config overrides it)")
    p.add_argument("--data", default=None, help="folder of training images (overrides the config's `data`)")
    p.add_argument("--out", default=None, help="output folder (overrides the config's `out`)")
    p.add_argument("--steps", type=int, default=None, help="total training steps (overrides the config)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt when present")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (0: torch's default; 1 is often fastest for tiny models on busy CPUs)")


def _train_image(args: argparse.Namespace) -> int:
    import torch

    from trimodal import config as cfgmod
    from trimodal.tokenizers.image.train import ImageTrainConfig, cpu_preset, train

    if args.config:
        cfg = cfgmod.load(args.config, ImageTrainConfig)
    elif args.preset:
        cfg = cpu_preset(args.preset)
    else:
        raise cfgmod.ConfigError("give --config FILE or --preset {fsq,lfq,movq}")
    if args.data:
        cfg.data = args.data
    if args.out:
        cfg.out = args.out
    if args.steps is not None:
        cfg.steps = args.steps
    cfgmod.require(cfg.steps >= 1, f"steps must be >= 1, got {cfg.steps}")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    res = train(cfg, resume=args.resume)
    print(json.dumps({"tokenizer": f"{cfg.out}/tokenizer" if res.step >= cfg.steps else None,
                      "checkpoint": f"{cfg.out}/checkpoint.pt", "name": res.tokenizer.name,
                      "vocab_size": res.tokenizer.vocab_size, "hash": res.hash, "step": res.step,
                      "skipped": res.skipped, **{k: round(v, 4) for k, v in res.metrics.items()}}))
    return 0


def _audio_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None,
                   help="YAML/JSON AudioTrainConfig (default: the tiny 16 kHz CPU preset)")
    p.add_argument("--data", action="append", default=[],
                   help="audio file or folder (repeatable; replaces the config's data)")
    p.add_argument("--out", required=True, help="output folder: checkpoint.pt, log.jsonl, tokenizer.safetensors")
    p.add_argument("--steps", type=int, default=None, help="override the config's steps")
    p.add_argument("--batch-size", type=int, default=None, help="override the config's batch_size")
    p.add_argument("--device", default=None, help="override the config's device (auto, cpu, cuda)")
    p.add_argument("--no-resume", action="store_true", help="start over even if out/checkpoint.pt exists")
    p.add_argument("--no-progress", action="store_true")


def _train_audio(args: argparse.Namespace) -> int:
    from trimodal import config as cfgmod
    from trimodal.tokenizers.audio_train import AudioTrainConfig, train_audio_tokenizer

    cfg = cfgmod.load(args.config, AudioTrainConfig) if args.config else AudioTrainConfig()
    overrides = {k: v for k, v in {"steps": args.steps, "batch_size": args.batch_size,
                                   "device": args.device, "data": args.data or None}.items()
                 if v is not None}
    cfg = dataclasses.replace(cfg, **overrides)
    if not cfg.data:
        raise cfgmod.ConfigError("no training audio: give --data or `data:` in the config")
    tok = train_audio_tokenizer(cfg, args.out, resume=not args.no_resume, progress=not args.no_progress)
    print(json.dumps({"tokenizer": f"{args.out.rstrip('/')}/tokenizer.safetensors", "name": tok.name,
                      "hash": tok.hash, "n_q": tok.n_q, "codebook_size": tok.vocab_size,
                      "sample_rate": tok.sample_rate, "hop_length": tok.hop_length}))
    return 0
