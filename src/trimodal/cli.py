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
    # Each kind registers the arguments of its `train` action here (None: not built yet).
    train_args = {"text": _add_text_tokenizer_args, "image": _add_image_tokenizer_args, "audio": _add_audio_tokenizer_args}
    for kind, add_args in train_args.items():
        t = tsub.add_parser(kind, help=f"{kind} tokenizer").add_subparsers(dest="action", required=True)
        train = t.add_parser("train", help=f"train a {kind} tokenizer")
        if add_args is not None:
            add_args(train)


def _run_tokenizer(args: argparse.Namespace) -> int:
    # Each kind registers its runner here; kinds without one report "not built".
    runners = {"text": _train_text_tokenizer, "image": _train_image_tokenizer, "audio": _train_audio_tokenizer}
    run = runners.get(args.kind)
    if run is None:
        return _not_built(f"tokenizer {args.kind} {args.action}", {"text": 3, "image": 5, "audio": 6}[args.kind])
    return run(args)


def _add_text_tokenizer_args(p: argparse.ArgumentParser) -> None:
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


def _train_text_tokenizer(args: argparse.Namespace) -> int:
    import json

    from tqdm import tqdm

    from trimodal import config as cfgmod
    from trimodal.corpora.text import CorpusError, iter_texts, open_text_corpus
    from trimodal.tokenizers.text import TextTokenizer, TextTokenizerConfig

    try:
        if args.config:
            cfg = cfgmod.load(args.config, TextTokenizerConfig)
        else:
            cfg = TextTokenizerConfig(vocab_size=args.vocab_size, model_type=args.model_type,
                                      hard_vocab_limit=not args.soft_vocab_limit)
        corpus = open_text_corpus(args.corpus, format=args.format, field=args.field, split=args.split)
        skips: dict[str, int] = {}
        texts = tqdm(iter_texts(corpus, skips), desc="training text tokenizer", unit="doc")
        tok = TextTokenizer.train(texts, config=cfg)
    except (cfgmod.ConfigError, CorpusError) as err:
        print(f"trimodal: {err}", file=sys.stderr)
        return 1
    tok.save(args.out)
    log.info("wrote %s (%d pieces, hash %s); skipped %s", args.out, tok.vocab_size, tok.hash, skips or "none")
    print(json.dumps({"model": args.out, "name": tok.name, "vocab_size": tok.vocab_size,
                      "hash": tok.hash, "skipped": skips}))
    return 0


def _add_image_tokenizer_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="YAML/JSON ImageTrainConfig (model, loss, optim, data, ...)")
    p.add_argument("--preset", default=None, choices=["fsq", "lfq", "movq"],
                   help="start from the small CPU preset of this quantizer (a --config overrides it)")
    p.add_argument("--data", default=None, help="folder of training images (overrides the config's `data`)")
    p.add_argument("--out", default=None, help="output folder (overrides the config's `out`)")
    p.add_argument("--steps", type=int, default=None, help="total training steps (overrides the config)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt when present")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (0: torch's default; 1 is often fastest for tiny models on busy CPUs)")


def _train_image_tokenizer(args: argparse.Namespace) -> int:
    import json

    import torch

    from trimodal import config as cfgmod
    from trimodal.tokenizers.image.train import ImageTrainConfig, cpu_preset, train

    try:
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
    except (cfgmod.ConfigError, FileNotFoundError) as err:
        print(f"trimodal: {err}", file=sys.stderr)
        return 1
    print(json.dumps({"tokenizer": f"{cfg.out}/tokenizer" if res.step >= cfg.steps else None,
                      "checkpoint": f"{cfg.out}/checkpoint.pt", "name": res.tokenizer.name,
                      "vocab_size": res.tokenizer.vocab_size, "hash": res.hash, "step": res.step,
                      "skipped": res.skipped, **{k: round(v, 4) for k, v in res.metrics.items()}}))
    return 0


# --- tokenization jobs -----------------------------------------------------------------
def _add_job_args(p: argparse.ArgumentParser) -> None:
    """Arguments every `tokenize` kind shares (the job runner's options)."""
    p.add_argument("--corpus", required=True, help="corpus path or fsspec URL")
    p.add_argument("--out", required=True, help="output folder (tables/, reports); reruns resume")
    p.add_argument("--name", default="", help="source name recorded in every row (default: folder name)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers decoding samples")
    p.add_argument("--rank", type=int, default=None, help="default: RANK or SLURM_PROCID, else 0")
    p.add_argument("--world-size", type=int, default=None,
                   help="default: WORLD_SIZE or SLURM_NTASKS, else 1")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for the encoder on CUDA")
    p.add_argument("--threads", type=int, default=0,
                   help="encoder threads on CPU (0: torch's setting, capped at the usable cores)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars (batch logs)")


def _add_tokenize(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tokenize", help="encode a raw corpus into token tables")
    ksub = p.add_subparsers(dest="kind", required=True)

    img = ksub.add_parser("image", help="image-text pairs -> rows with task image_text")
    _add_job_args(img)
    img.add_argument("--format", required=True, choices=["folder", "wds", "parquet", "jsonl", "hf"])
    img.add_argument("--image-tokenizer", required=True, help="image tokenizer checkpoint (folder)")
    img.add_argument("--text-tokenizer", required=True, help="SentencePiece model file")
    img.add_argument("--image-size", type=int, default=64)
    img.add_argument("--crop", default="center_crop", choices=["center_crop", "resize", "pad"])
    img.add_argument("--unit-size", type=int, default=1000, help="folder/hf: samples per work unit")
    img.add_argument("--unit-by", default="file", choices=["file", "row_group"], help="parquet units")
    img.add_argument("--image-column", default="image")
    img.add_argument("--image-path-column", default="", help="read images from paths in this column")
    img.add_argument("--caption-column", default="caption")
    img.add_argument("--key-column", default="key")
    img.add_argument("--split", default="", help="hf: one split of a DatasetDict (default: all)")

    txt = ksub.add_parser("text", help="text documents -> rows with task text")
    _add_job_args(txt)
    txt.add_argument("--format", default="auto", choices=["auto", "txt", "jsonl", "parquet", "hf"])
    txt.add_argument("--text-tokenizer", required=True, help="SentencePiece model file")
    txt.add_argument("--field", default="text", help="JSON field / column holding the text")
    txt.add_argument("--key-field", default=None, help="field holding a unique id")
    txt.add_argument("--split", default=None, help="hf: one split of a DatasetDict")

    aud = ksub.add_parser("audio", help="audio-transcript pairs -> rows with task audio_text")
    _add_job_args(aud)
    _add_tokenize_audio(aud)


def _add_tokenize_audio(p: argparse.ArgumentParser) -> None:
    """Audio-specific arguments of `tokenize audio`."""
    p.add_argument("--format", required=True, choices=["folder", "wds", "hf"])
    codec = p.add_mutually_exclusive_group(required=True)
    codec.add_argument("--audio-tokenizer", help="trimodal audio tokenizer (.safetensors from `tokenizer audio train`)")
    codec.add_argument("--dac-weights", help="upstream DAC weight file (.pth), loaded without unpickling code")
    p.add_argument("--n-q", type=int, default=None, help="codebooks kept (default: the tokenizer's)")
    p.add_argument("--text-tokenizer", required=True, help="SentencePiece model file")
    p.add_argument("--unit-size", type=int, default=1000, help="folder/hf: samples per work unit")
    p.add_argument("--min-seconds", type=float, default=0.05, help="shorter clips are skipped (too_short)")
    p.add_argument("--max-seconds", type=float, default=60.0, help="longer clips are skipped (too_long)")
    p.add_argument("--loudness-db", type=float, default=None,
                   help="normalize each clip to this integrated loudness (LUFS), e.g. -16 as DAC's compress")
    p.add_argument("--audio-column", default="audio", help="hf: audio column")
    p.add_argument("--text-column", default="", help="hf: transcript column (default: text/transcription/sentence)")
    p.add_argument("--key-column", default="", help="hf: column with a unique id (default: row index)")
    p.add_argument("--split", default="", help="hf: one split of a DatasetDict (default: all)")


def _tokenize_audio(args: argparse.Namespace) -> int:
    from trimodal.config import ConfigError

    try:
        from trimodal.corpora.audio import AudioCorpusOptions, AudioLimits, open_audio_corpus
        from trimodal.jobs.audio import AudioEncoder
        from trimodal.tokenizers.audio import AudioTokenizer
        from trimodal.tokenizers.text import TextTokenizer

        text_tok = TextTokenizer.load(args.text_tokenizer)
        if args.dac_weights:
            audio_tok = AudioTokenizer.from_dac_weights(args.dac_weights, args.n_q)
        else:
            audio_tok = AudioTokenizer.load(args.audio_tokenizer)
            if args.n_q is not None:
                audio_tok = audio_tok.with_n_q(args.n_q)
        audio_tok.use_bf16 = args.bf16
        options = AudioCorpusOptions(name=args.name, unit_size=args.unit_size, audio_column=args.audio_column,
                                     text_column=args.text_column, key_column=args.key_column, split=args.split)
        corpus = open_audio_corpus(args.corpus, args.format, options)
        encoder = AudioEncoder(audio_tok, text_tok, AudioLimits(args.min_seconds, args.max_seconds),
                               loudness_db=args.loudness_db)
        return _run_job_and_report(corpus, encoder, args)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"trimodal tokenize audio: {err}", file=sys.stderr)
        return 2


def _add_audio_tokenizer_args(p: argparse.ArgumentParser) -> None:
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


def _train_audio_tokenizer(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from trimodal import config as cfgmod
    from trimodal.tokenizers.audio_train import AudioTrainConfig, train_audio_tokenizer

    try:
        cfg = cfgmod.load(args.config, AudioTrainConfig) if args.config else AudioTrainConfig()
        overrides = {k: v for k, v in {"steps": args.steps, "batch_size": args.batch_size,
                                       "device": args.device, "data": args.data or None}.items()
                     if v is not None}
        cfg = dataclasses.replace(cfg, **overrides)
        if not cfg.data:
            raise cfgmod.ConfigError("no training audio: give --data or `data:` in the config")
        tok = train_audio_tokenizer(cfg, args.out, resume=not args.no_resume, progress=not args.no_progress)
    except cfgmod.ConfigError as err:
        print(f"trimodal tokenizer audio train: {err}", file=sys.stderr)
        return 1
    print(json.dumps({"tokenizer": f"{args.out.rstrip('/')}/tokenizer.safetensors", "name": tok.name,
                      "hash": tok.hash, "n_q": tok.n_q, "codebook_size": tok.vocab_size,
                      "sample_rate": tok.sample_rate, "hop_length": tok.hop_length}))
    return 0


def _job_config(args: argparse.Namespace):
    from trimodal.jobs.runner import JobConfig

    return JobConfig(out=args.out, batch_size=args.batch_size, workers=args.workers,
                     rank=args.rank, world_size=args.world_size, device=args.device,
                     threads=args.threads, progress=not args.no_progress)


def _run_job_and_report(corpus, encoder, args: argparse.Namespace) -> int:
    import json

    import fsspec

    from trimodal.jobs.runner import format_summary, run_job

    result = run_job(corpus, encoder, _job_config(args))
    with fsspec.open(f"{args.out.rstrip('/')}/report.json", "r") as f:
        print(format_summary(json.load(f)))
    print(f"this rank: {result['units_done']} units encoded, {result['units_already_done']} "
          f"already done, {result['samples_ok']} samples, {result['items_per_s']} items/s")
    return 0


def _run_tokenize(args: argparse.Namespace) -> int:
    from trimodal.config import ConfigError

    if args.kind == "audio":
        return _tokenize_audio(args)
    try:
        from trimodal.tokenizers.text import TextTokenizer

        text_tok = TextTokenizer.load(args.text_tokenizer)
        if args.kind == "text":
            from trimodal.corpora.text import open_text_corpus
            from trimodal.jobs.text import TextEncoder

            corpus = open_text_corpus(args.corpus, args.format, name=args.name or "text",
                                      field=args.field, key_field=args.key_field, split=args.split)
            return _run_job_and_report(corpus, TextEncoder(text_tok), args)
        from trimodal.corpora.image import ImageCorpusOptions, open_image_corpus
        from trimodal.jobs.image import ImageEncoder
        from trimodal.tokenizers.image import ImageTokenizer

        options = ImageCorpusOptions(
            name=args.name, unit_size=args.unit_size, unit_by=args.unit_by,
            image_column=args.image_column, image_path_column=args.image_path_column,
            caption_column=args.caption_column, key_column=args.key_column, split=args.split)
        corpus = open_image_corpus(args.corpus, args.format, options)
        image_tok = ImageTokenizer.load(args.image_tokenizer).eval()
        encoder = ImageEncoder(image_tok, text_tok, image_size=args.image_size,
                               crop_policy=args.crop, bf16=args.bf16)
        return _run_job_and_report(corpus, encoder, args)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"trimodal tokenize {args.kind}: {err}", file=sys.stderr)
        return 2


# --- vocabulary ------------------------------------------------------------------------
def _add_vocab(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("vocab", help="build the unified vocabulary (vocab.json) from tokenizers",
                       description="Disjoint union of the text, image and audio id ranges plus PAD, "
                       "BOS/EOS/MASK per modality and TASK tokens; `trimodal pack --vocab` reads it.")
    p.add_argument("--text-tokenizer", required=True, help="SentencePiece model of this run")
    p.add_argument("--image-tokenizer", default=None, help="image tokenizer folder (omit: no image range)")
    p.add_argument("--audio-tokenizer", default=None, help="our DAC .safetensors (omit: no audio range)")
    p.add_argument("--dac-weights", default=None, help="or an upstream DAC .pth")
    p.add_argument("--n-q", type=int, default=None, help="audio codebooks kept (default: all)")
    p.add_argument("--audio-shared", action="store_true", help="one id range shared by all codebooks")
    p.add_argument("--out", required=True, help="vocab.json path (any fsspec URL)")


def _run_vocab(args: argparse.Namespace) -> int:
    from trimodal.packing.vocab import Vocab, VocabError
    from trimodal.tokenizers.text import TextTokenizer

    try:
        text = TextTokenizer.load(args.text_tokenizer)
        hashes = {"text": text.hash}
        image_size = 0
        if args.image_tokenizer:
            from trimodal.tokenizers.image import ImageTokenizer

            image = ImageTokenizer.load(args.image_tokenizer)
            image_size, hashes["image"] = image.vocab_size, image.hash
        codebook_size = n_q = 0
        if args.audio_tokenizer or args.dac_weights:
            from trimodal.tokenizers.audio import AudioTokenizer

            audio = (AudioTokenizer.load(args.audio_tokenizer) if args.audio_tokenizer
                     else AudioTokenizer.from_dac_weights(args.dac_weights))
            if args.n_q:
                audio = audio.with_n_q(args.n_q)
            codebook_size, n_q, hashes["audio"] = audio.vocab_size, audio.n_q, audio.hash
        vocab = Vocab.from_sizes(text.vocab_size, image_size, codebook_size, n_q,
                                 audio_shared=args.audio_shared, tokenizers=hashes)
        vocab.save(args.out)
    except (VocabError, ValueError, FileNotFoundError) as err:
        print(f"trimodal vocab: {err}", file=sys.stderr)
        return 2
    print(repr(vocab))
    return 0


# --- packing ---------------------------------------------------------------------------
def _add_pack(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pack", help="pack token tables into fixed-length sequences and write shards",
                       description="Token tables -> packed sequences -> one shard set per (task, "
                       "source) under OUT/<task>/<source>/, listed in OUT/sets.json.")
    p.add_argument("--tables", required=True, action="append",
                   help="folder of *.parquet token tables, a glob, or one file (repeatable)")
    p.add_argument("--vocab", required=True, help="vocab.json of this run")
    p.add_argument("--out", required=True, help="output folder URL (local, s3://, memory://, ...)")
    p.add_argument("--length", type=int, required=True, help="sequence length L")
    p.add_argument("--mode", choices=["pack", "pad"], default="pack",
                   help="pack: text documents share sequences; pad: one document per sequence")
    p.add_argument("--no-cross-boundaries", action="store_true",
                   help="pack mode: start a document on a new sequence when it does not fit")
    p.add_argument("--overflow", choices=["truncate_text", "drop"], default="truncate_text",
                   help="what to do with a pair longer than L")
    p.add_argument("--audio-codebooks", type=int, default=0, help="codebooks kept per frame (0: all)")
    p.add_argument("--shard-samples", type=int, default=10_000, help="max samples per shard")
    p.add_argument("--shard-bytes", type=int, default=None, help="max bytes per shard")
    p.add_argument("--overwrite", action="store_true", help="replace existing shard sets")


def _run_pack(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict

    import fsspec

    from trimodal.packing.packer import Packer, PackerConfig
    from trimodal.packing.vocab import Vocab, VocabError
    from trimodal.shards.manifest import ShardError
    from trimodal.shards.pack import list_tables, pack_tables
    from trimodal.shards.writer import WriterConfig

    try:
        vocab = Vocab.load(args.vocab)
        packer_cfg = PackerConfig(length=args.length, mode=args.mode,
                                  cross_boundaries=not args.no_cross_boundaries,
                                  overflow=args.overflow, audio_codebooks=args.audio_codebooks)
        writer_cfg = WriterConfig(max_samples=args.shard_samples, max_bytes=args.shard_bytes,
                                  overwrite=args.overwrite)
        tables = list_tables(args.tables)
        packer = Packer(packer_cfg, vocab)
        sets = pack_tables(tables, packer, args.out, writer_cfg,
                           run_config={"packer": asdict(packer_cfg), "tables": tables})
    except (VocabError, ShardError, ValueError) as err:
        log.error("%s", err)
        return 1
    with fsspec.open(args.out.rstrip("/") + "/pack_stats.json", "w") as f:
        json.dump(packer.stats.as_dict(), f, indent=2, sort_keys=True)
    for s in sets:
        print(f"{s['url']}: {s['samples']} sequences, {s['tokens']} tokens "
              f"({100.0 * s['pad_tokens'] / max(s['tokens'], 1):.1f}% pad), task={s['task']}")
    return 0 if sets else 1


# --- shards ----------------------------------------------------------------------------
def _add_shards(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("shards", help="verify or inspect WebDataset shards")
    ssub = p.add_subparsers(dest="action", required=True)
    v = ssub.add_parser("verify", help="check shard sets against their manifests (exit 1 on problems)")
    v.add_argument("paths", nargs="+", metavar="PATH",
                   help="shard-set folder, manifest.json, or a `trimodal pack` output folder")
    v.add_argument("--vocab", default=None, help="vocab.json to check against (default: the one beside)")
    i = ssub.add_parser("inspect", help="print a few samples decoded back into readable spans")
    i.add_argument("path", metavar="PATH", help="shard-set folder or manifest.json")
    i.add_argument("-n", type=int, default=3, help="how many samples (default 3)")
    i.add_argument("--vocab", default=None, help="vocab.json (default: the one beside the manifest)")
    i.add_argument("--text-tokenizer", default=None,
                   help="SentencePiece model of the text tokenizer, to print text spans as text")


def _run_shards(args: argparse.Namespace) -> int:
    from trimodal.packing.vocab import Vocab, VocabError
    from trimodal.shards.manifest import ShardError, read_manifest
    from trimodal.shards.pack import expand_sets
    from trimodal.shards.verify import describe_sample, iter_shard_samples, load_vocab_for, verify_shards

    try:
        vocab = Vocab.load(args.vocab) if args.vocab else None
        if args.action == "verify":
            ok = True
            for path in [p for arg in args.paths for p in expand_sets(arg)]:
                report = verify_shards(path, vocab)
                print("\n".join(report.lines()))
                ok = ok and report.ok
            return 0 if ok else 1
        manifest = read_manifest(args.path)
        vocab = load_vocab_for(manifest, vocab)
        text_decoder = None
        if args.text_tokenizer:
            from trimodal.tokenizers.text import TextTokenizer  # lazy: shards never import tokenizers
            tok = TextTokenizer.load(args.text_tokenizer)
            text_decoder = lambda ids: tok.decode([ids])[0]  # noqa: E731
        for n, (key, tokens, meta) in enumerate(iter_shard_samples(manifest, vocab)):
            if n >= args.n:
                break
            print(describe_sample(key, tokens, meta, vocab, text_decoder))
        return 0
    except (ShardError, VocabError) as err:
        log.error("%s", err)
        return 1


# --- training and sampling -------------------------------------------------------------
def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a masked diffusion model on shards",
                       description="Train an MDM (see docs/mdm_core.md). Under torchrun every "
                                   "process runs this same command.")
    p.add_argument("--config", help="YAML TrainConfig (model, masking, optim, sde, data, ...)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="dotted overrides, YAML values: optim.lr=1e-3 data.train=shards/text")


def _run_train(args: argparse.Namespace) -> int:
    from trimodal.config import ConfigError
    from trimodal.mdm_core.checkpoint import CheckpointError
    from trimodal.mdm_core.config import load_train_config
    from trimodal.mdm_core.trainer import run
    from trimodal.packing.vocab import VocabError
    from trimodal.shards import ShardError

    try:
        cfg = load_train_config(args.config, args.overrides)
        result = run(cfg)
    except (ConfigError, VocabError, ShardError, CheckpointError) as err:
        print(f"trimodal train: {err}", file=sys.stderr)
        return 2
    log.info("training finished at step %d; run folder %s", result.step, cfg.out_dir)
    return 0


_SAMPLE_MODALITY = {"text": "text", "t2i": "image", "t2s": "audio", "i2t": "text", "s2t": "text"}


def _add_sample(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sample", help="sample text, images (t2i), speech (t2s), captions (i2t) or transcripts (s2t)",
        description="Generate with a trained MDM. Settings start from the generated modality's "
                    "defaults (docs/sampling.md), then --config, then the flags below.")
    p.add_argument("task", choices=list(_SAMPLE_MODALITY))
    p.add_argument("--checkpoint", required=True, help="training run folder (its latest checkpoint) or a step_* folder")
    p.add_argument("--vocab", help="vocab.json (default: the one in the run folder)")
    p.add_argument("--prompt", action="append", default=[], help="prompt text (text, t2i, t2s); repeat for a batch")
    p.add_argument("--suffix", help="text after the generated span (text infilling)")
    p.add_argument("--image", action="append", default=[], help="input image file (i2t); repeat for a batch")
    p.add_argument("--audio", action="append", default=[], help="input audio file (s2t); repeat for a batch")
    p.add_argument("--text-tokenizer", help="SentencePiece model (needed by every direction)")
    p.add_argument("--image-tokenizer", help="image tokenizer folder or checkpoint (t2i, i2t)")
    p.add_argument("--audio-tokenizer", help="audio tokenizer .safetensors (t2s, s2t)")
    p.add_argument("--out", help="output file: .txt (text, i2t, s2t), .png (t2i), .wav (t2s); a batch gets "
                                 "_<i> before the extension (default: print text, sample.png, sample.wav)")
    p.add_argument("--length", type=int, default=32, help="text ids to generate (text, i2t, s2t)")
    p.add_argument("--grid", help="image code grid HxW (t2i; default: the image tokenizer's)")
    p.add_argument("--seconds", type=float, default=3.0, help="speech duration (t2s)")
    p.add_argument("--n-q", type=int, help="audio codebooks (t2s, s2t; default: the audio tokenizer's)")
    p.add_argument("--config", help="YAML file of sampling settings (SamplingConfig fields)")
    p.add_argument("--steps", type=int, help="unmasking steps (0 = one per generated position)")
    p.add_argument("--schedule", choices=["linear", "cosine", "poly"])
    p.add_argument("--schedule-exponent", type=float)
    p.add_argument("--temperature", type=float)
    p.add_argument("--top-k", type=int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--remasking", choices=["low_confidence", "random"])
    p.add_argument("--block-length", type=int, help="semi-autoregressive block length (0 = off)")
    p.add_argument("--cfg", help="classifier-free guidance weight w, or 'none' to switch it off")
    p.add_argument("--seed", type=int)
    p.add_argument("--bf16", action="store_true", default=None, help="bf16 autocast (CUDA)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--task-token", help="TASK token to prompt with (default: the data task the model "
                                        "was trained on, e.g. image_text for t2i)")


def _run_sample(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    import yaml

    from trimodal.config import ConfigError
    from trimodal.mdm_core.checkpoint import CheckpointError
    from trimodal.mdm_core.sampler import Sampler, SamplingError, load_model, model_logits_fn
    from trimodal.mdm_core.sampling_config import default_config
    from trimodal.packing.vocab import Vocab, VocabError

    task, modality = args.task, _SAMPLE_MODALITY[args.task]

    def fail(msg: str) -> int:
        print(f"trimodal sample {task}: {msg}", file=sys.stderr)
        return 2

    def outputs(default: str, n: int) -> list[str]:
        base = args.out or default
        if n == 1:
            return [base]
        stem, dot, ext = base.rpartition(".")
        return [f"{stem}_{i}.{ext}" if dot else f"{base}_{i}" for i in range(n)]

    try:
        overrides: dict = {}
        if args.config:
            with open(args.config) as f:
                overrides.update(yaml.safe_load(f) or {})
        flags = {"steps": args.steps, "schedule": args.schedule, "schedule_exponent": args.schedule_exponent,
                 "temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p,
                 "remasking": args.remasking, "block_length": args.block_length, "seed": args.seed,
                 "bf16": args.bf16}
        overrides.update({k: v for k, v in flags.items() if v is not None})
        if args.cfg is not None:
            overrides["cfg_scale"] = None if args.cfg.lower() in ("none", "off") else float(args.cfg)
        cfg = default_config(modality, overrides)
        if task == "text" and cfg.cfg_scale is not None:
            return fail("classifier-free guidance needs a condition; text continuation has none")
        from trimodal.io import resolve_device
        device = resolve_device(args.device)
        vocab = Vocab.load(args.vocab) if args.vocab else None
        model, vocab = load_model(args.checkpoint, vocab, device)
        if not args.text_tokenizer:
            return fail("--text-tokenizer is required")
        from trimodal.tokenizers.text import TextTokenizer
        text_tok = TextTokenizer.load(args.text_tokenizer)
        image_tok = audio_tok = None
        if task in ("t2i", "i2t"):
            if not args.image_tokenizer:
                return fail("--image-tokenizer is required")
            from trimodal.tokenizers.image import ImageTokenizer
            image_tok = ImageTokenizer.load(args.image_tokenizer, map_location=device)
        if task in ("t2s", "s2t"):
            if not args.audio_tokenizer:
                return fail("--audio-tokenizer is required")
            from trimodal.tokenizers.audio import AudioTokenizer
            audio_tok = AudioTokenizer.load(args.audio_tokenizer)
            if args.n_q:
                audio_tok = audio_tok.with_n_q(args.n_q)
        tasks = {task: args.task_token} if args.task_token else None
        sampler = Sampler(model_logits_fn(model, vocab), vocab, text=text_tok, image=image_tok,
                          audio=audio_tok, device=device, tasks=tasks)
        log.info("sample %s on %s with %s", task, device, cfg)

        if task in ("text", "t2i", "t2s") and not args.prompt:
            return fail("give at least one --prompt")
        if task == "text":
            suffixes = [args.suffix] * len(args.prompt) if args.suffix else None
            texts = sampler.text(args.prompt, args.length, cfg, suffixes, progress=True)
        elif task == "i2t":
            if not args.image:
                return fail("give at least one --image")
            from trimodal.tokenizers.image import load_image
            codes = image_tok.encode_pil([load_image(p, where=p) for p in args.image])
            texts = sampler.i2t(codes, args.length, cfg, progress=True)
        elif task == "s2t":
            if not args.audio:
                return fail("give at least one --audio")
            import soundfile as sf
            from trimodal.tokenizers.audio import to_codec_input
            waves = []
            for path in args.audio:
                data, sr = sf.read(path, dtype="float32", always_2d=True)
                waves.append(to_codec_input(data.T, sr, audio_tok.sample_rate))
            texts = sampler.s2t(audio_tok.encode(waves), args.length, cfg, progress=True)
        elif task == "t2i":
            if args.grid:
                h, _, w = args.grid.lower().partition("x")
                grid = (int(h), int(w or h))
            else:
                grid = image_tok.grid(image_tok.config.image_size)
            images = sampler.t2i(args.prompt, grid, cfg, progress=True)
            for img, path in zip(images, outputs("sample.png", len(images))):
                img.save(path)
                print(path)
            return 0
        else:  # t2s
            import soundfile as sf
            frames = audio_tok.frames(int(round(args.seconds * audio_tok.sample_rate)))
            waves = sampler.t2s(args.prompt, audio_tok.n_q, frames, cfg, progress=True)
            for wave, path in zip(waves, outputs("sample.wav", len(waves))):
                sf.write(path, np.asarray(wave, dtype=np.float32), audio_tok.sample_rate)
                print(path)
            return 0
        if args.out:
            for text, path in zip(texts, outputs(args.out, len(texts))):
                with open(path, "w") as f:
                    f.write(text + "\n")
                print(path)
        else:
            for text in texts:
                print(text)
        return 0
    except (ConfigError, CheckpointError, SamplingError, VocabError, ValueError, OSError) as err:
        return fail(str(err))


# --- benchmarks, demo, studies ---------------------------------------------------------
def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="reconstruction benchmarks")
    bsub = p.add_subparsers(dest="what", required=True)
    r = bsub.add_parser(
        "recon", help="compare tokenizers by reconstruction on a held-out set",
        description="Encode and decode a held-out set with each tokenizer and write recon.json, "
                    "recon.md (one comparison table per modality) and index.html (examples) to "
                    "--out. See docs/recon_benchmark.md.")
    r.add_argument("--tokenizer", action="append", required=True, metavar="KIND:PATH[:n_q=N][:label=NAME]",
                   help="image:FOLDER (our image tokenizer), audio:FILE.safetensors (our DAC), "
                        "dac:FILE.pth (upstream DAC weights); repeat to compare; the same DAC at "
                        "several n_q compares codebook counts")
    r.add_argument("--data", action="append", required=True,
                   help="folder (recursive) or file of held-out images (png/jpg/webp/bmp) and/or "
                        "audio (wav/flac/ogg); repeatable; each tokenizer reads its modality")
    r.add_argument("--out", required=True, help="output folder")
    r.add_argument("--limit", type=int, default=None, help="at most N files per modality (sorted order)")
    r.add_argument("--fid", action=argparse.BooleanOptionalAction, default=None,
                   help="FID on images (default: when Inception weights are installed)")
    r.add_argument("--fid-weights", default=None, help="FID Inception weights file (default: searched)")
    r.add_argument("--image-size", type=int, default=None,
                   help="crop/resize images to this size (default: each tokenizer's image_size)")
    r.add_argument("--resize-policy", default=None, choices=["center_crop", "resize", "pad"])
    r.add_argument("--batch-size", type=int, default=16)
    r.add_argument("--examples", type=int, default=4, help="items per modality shown in index.html")
    r.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    r.add_argument("--bf16", action="store_true", help="bf16 autocast in the tokenizers (CUDA)")
    r.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    r.add_argument("--no-progress", action="store_true")


def _run_bench(args: argparse.Namespace) -> int:
    import json

    import torch

    from trimodal.config import ConfigError
    from trimodal.metrics.recon import ReconBenchConfig, parse_tokenizer_spec, run_recon_bench, write_outputs

    try:
        if args.threads > 0:
            torch.set_num_threads(args.threads)
        cfg = ReconBenchConfig(
            tokenizers=[parse_tokenizer_spec(t) for t in args.tokenizer], data=args.data,
            limit=args.limit, fid=args.fid, fid_weights=args.fid_weights, image_size=args.image_size,
            resize_policy=args.resize_policy, batch_size=args.batch_size, examples=args.examples,
            device=args.device, bf16=args.bf16, progress=not args.no_progress)
        result = run_recon_bench(cfg)
    except ConfigError as err:
        print(f"trimodal bench recon: {err}", file=sys.stderr)
        return 2
    paths = write_outputs(result, args.out)
    print(open(paths["markdown"]).read())
    print(json.dumps(paths))
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline on the bundled demo corpus",
                       description="corpus -> tokenizers -> jobs -> pack/shards -> MDM -> samples -> "
                       "reconstruction metrics -> OUT/report/index.html. Finished stages are reused.")
    p.add_argument("--out", default="demo_out", help="output folder (stages are resumable)")
    p.add_argument("--tiny", action="store_true", help="seconds-long smoke run (what the tests use)")
    p.add_argument("--config", help="YAML with DemoConfig fields (see trimodal/demo/pipeline.py)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")


def _run_demo(args: argparse.Namespace) -> int:
    from trimodal.config import ConfigError, load
    from trimodal.demo.pipeline import Demo, DemoConfig

    try:
        cfg = load(args.config, DemoConfig) if args.config else (DemoConfig.tiny() if args.tiny else DemoConfig())
    except ConfigError as err:
        print(f"trimodal demo: {err}", file=sys.stderr)
        return 2
    if args.threads:
        cfg.threads = args.threads
    path = Demo(args.out, cfg).run()
    print(f"report: {path}")
    return 0


def _add_study(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("study", help="design-space sweeps and scaling-law fits",
                       description="Sweeps over training settings, scaling-law fit, compute-optimal frontier "
                                   "and critical batch size (see docs/study.md).")
    ssub = p.add_subparsers(dest="action", required=True)
    for name, help_ in (("run", "run the sweep's missing points (resumable), then write the report"),
                        ("report", "rebuild the table and report from the finished points"),
                        ("points", "list the sweep's points and whether each is done")):
        a = ssub.add_parser(name, help=help_)
        src = a.add_mutually_exclusive_group(required=True)
        src.add_argument("--preset", help="named sweep: small (the committed report) or tiny (seconds)")
        src.add_argument("--config", help="YAML SweepConfig (base, defaults, blocks, data, analysis options)")
        a.add_argument("--out", required=True, help="sweep folder: data cache, points/<name>/result.json, tables")
        if name != "points":
            a.add_argument("--report", default=None, help="report folder (default: OUT/report)")
        if name == "run":
            a.add_argument("--rank", type=int, default=None, help="default: RANK or SLURM_PROCID, else 0")
            a.add_argument("--world-size", type=int, default=None, help="default: WORLD_SIZE or SLURM_NTASKS, else 1")
            a.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
            a.add_argument("--no-progress", action="store_true", help="no tqdm bars")


def _run_study(args: argparse.Namespace) -> int:
    import json

    from trimodal import config as cfgmod
    from trimodal.study import make_report, preset, run_study
    from trimodal.study.sweep import SweepConfig, expand, result_path

    try:
        cfg = preset(args.preset) if args.preset else cfgmod.load(args.config, SweepConfig)
        if args.action == "points":
            for p in expand(cfg):
                done = "done" if result_path(args.out, p).exists() else "todo"
                print(f"{done}  {p.name}  {json.dumps(p.axes, default=str)}")
            return 0
        source = f"--preset {args.preset}" if args.preset else f"--config {args.config}"
        command = f"trimodal study run {source} --out {args.out}" + (f" --report {args.report}" if args.report else "")
        if args.action == "report":
            print(make_report(cfg, args.out, args.report, command=command))
            return 0
        if args.threads > 0:
            import torch

            torch.set_num_threads(args.threads)
        status = run_study(cfg, args.out, rank=args.rank, world_size=args.world_size, report_dir=args.report,
                           command=command, progress=not args.no_progress)
    except cfgmod.ConfigError as err:
        print(f"trimodal study: {err}", file=sys.stderr)
        return 2
    print(json.dumps(status))
    return 1 if status["failed"] else 0


STAGES = {
    "tokenizer": (_add_tokenizer, _run_tokenizer),
    "tokenize": (_add_tokenize, _run_tokenize),
    "vocab": (_add_vocab, _run_vocab),
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
