"""`trimodal tokenize {image,text,audio}`: encode a raw corpus into token tables (a job)."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tokenize", help="encode a raw corpus into token tables")
    ksub = p.add_subparsers(dest="kind", required=True)

    img = ksub.add_parser("image", help="image-text pairs -> rows with task image_text")
    _job_args(img)
    img.add_argument("--format", required=True, choices=["folder", "wds", "parquet", "jsonl", "hf"])
    img.add_argument("--image-tokenizer", required=True,
                     help="image tokenizer: a folder of ours, or FORMAT:PATH of a registered format")
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
    img.set_defaults(run=_image, stage=img.prog)

    txt = ksub.add_parser("text", help="text documents -> rows with task text")
    _job_args(txt)
    txt.add_argument("--format", default="auto", choices=["auto", "txt", "jsonl", "parquet", "hf"])
    txt.add_argument("--text-tokenizer", required=True, help="SentencePiece model file")
    txt.add_argument("--field", default="text", help="JSON field / column holding the text")
    txt.add_argument("--key-field", default=None, help="field holding a unique id")
    txt.add_argument("--split", default=None, help="hf: one split of a DatasetDict")
    txt.set_defaults(run=_text, stage=txt.prog)

    aud = ksub.add_parser("audio", help="audio-transcript pairs -> rows with task audio_text")
    _job_args(aud)
    aud.add_argument("--format", required=True, choices=["folder", "wds", "hf"])
    codec = aud.add_mutually_exclusive_group(required=True)
    codec.add_argument("--audio-tokenizer",
                       help="audio tokenizer: our .safetensors (`tokenizer audio train`), or FORMAT:PATH")
    codec.add_argument("--dac-weights", help="upstream DAC weight file (.pth), loaded without unpickling code")
    aud.add_argument("--n-q", type=int, default=None, help="codebooks kept (default: the tokenizer's)")
    aud.add_argument("--text-tokenizer", required=True, help="SentencePiece model file")
    aud.add_argument("--unit-size", type=int, default=1000, help="folder/hf: samples per work unit")
    aud.add_argument("--min-seconds", type=float, default=0.05, help="shorter clips are skipped (too_short)")
    aud.add_argument("--max-seconds", type=float, default=60.0, help="longer clips are skipped (too_long)")
    aud.add_argument("--loudness-db", type=float, default=None,
                     help="normalize each clip to this integrated loudness (LUFS), e.g. -16 as DAC's compress")
    aud.add_argument("--audio-column", default="audio", help="hf: audio column")
    aud.add_argument("--text-column", default="", help="hf: transcript column (default: text/transcription/sentence)")
    aud.add_argument("--key-column", default="", help="hf: column with a unique id (default: row index)")
    aud.add_argument("--split", default="", help="hf: one split of a DatasetDict (default: all)")
    aud.set_defaults(run=_audio, stage=aud.prog)


def _job_args(p: argparse.ArgumentParser) -> None:
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


def _run_job(corpus, encoder, args: argparse.Namespace) -> int:
    from trimodal.io import open_url
    from trimodal.jobs.runner import JobConfig, format_summary, run_job

    config = JobConfig(out=args.out, batch_size=args.batch_size, workers=args.workers, rank=args.rank,
                       world_size=args.world_size, device=args.device, threads=args.threads,
                       progress=not args.no_progress)
    result = run_job(corpus, encoder, config)
    with open_url(f"{args.out.rstrip('/')}/report.json", "r") as f:
        print(format_summary(json.load(f)))
    print(f"this rank: {result['units_done']} units encoded, {result['units_already_done']} "
          f"already done, {result['samples_ok']} samples, {result['items_per_s']} items/s")
    return 0


def _text(args: argparse.Namespace) -> int:
    from trimodal.corpora.text import open_text_corpus
    from trimodal.jobs.text import TextEncoder
    from trimodal.tokenizers.spec import load_for

    text_tok = load_for("text", args.text_tokenizer)
    corpus = open_text_corpus(args.corpus, args.format, name=args.name or "text",
                              field=args.field, key_field=args.key_field, split=args.split)
    return _run_job(corpus, TextEncoder(text_tok), args)


def _image(args: argparse.Namespace) -> int:
    from trimodal.corpora.image import ImageCorpusOptions, open_image_corpus
    from trimodal.jobs.image import ImageEncoder
    from trimodal.tokenizers.spec import load_for

    text_tok = load_for("text", args.text_tokenizer)
    options = ImageCorpusOptions(
        name=args.name, unit_size=args.unit_size, unit_by=args.unit_by,
        image_column=args.image_column, image_path_column=args.image_path_column,
        caption_column=args.caption_column, key_column=args.key_column, split=args.split)
    corpus = open_image_corpus(args.corpus, args.format, options)
    image_tok = load_for("image", args.image_tokenizer)
    encoder = ImageEncoder(image_tok, text_tok, image_size=args.image_size, crop_policy=args.crop, bf16=args.bf16)
    return _run_job(corpus, encoder, args)


def _audio(args: argparse.Namespace) -> int:
    from trimodal.corpora.audio import AudioCorpusOptions, AudioLimits, open_audio_corpus
    from trimodal.jobs.audio import AudioEncoder
    from trimodal.tokenizers.spec import load_for

    text_tok = load_for("text", args.text_tokenizer)
    codec = f"dac:{args.dac_weights}" if args.dac_weights else args.audio_tokenizer
    audio_tok = load_for("audio", codec, n_q=args.n_q, bf16=args.bf16)
    options = AudioCorpusOptions(name=args.name, unit_size=args.unit_size, audio_column=args.audio_column,
                                 text_column=args.text_column, key_column=args.key_column, split=args.split)
    corpus = open_audio_corpus(args.corpus, args.format, options)
    encoder = AudioEncoder(audio_tok, text_tok, AudioLimits(args.min_seconds, args.max_seconds),
                           loudness_db=args.loudness_db)
    return _run_job(corpus, encoder, args)
