"""`trimodal vocab`: the unified vocabulary (vocab.json) from the run's tokenizers."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
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
    p.set_defaults(run=run, stage=p.prog)


def run(args: argparse.Namespace) -> int:
    from trimodal.packing.vocab import Vocab
    from trimodal.tokenizers.spec import load_for

    text = load_for("text", args.text_tokenizer)
    hashes = {"text": text.hash}
    image_size = 0
    if args.image_tokenizer:
        image = load_for("image", args.image_tokenizer)
        image_size, hashes["image"] = image.vocab_size, image.hash
    codebook_size = n_q = 0
    if args.audio_tokenizer or args.dac_weights:
        codec = args.audio_tokenizer or f"dac:{args.dac_weights}"
        audio = load_for("audio", codec, n_q=args.n_q or None)
        codebook_size, n_q, hashes["audio"] = audio.vocab_size, audio.n_q, audio.hash
    vocab = Vocab.from_sizes(text.vocab_size, image_size, codebook_size, n_q,
                             audio_shared=args.audio_shared, tokenizers=hashes)
    vocab.save(args.out)
    print(repr(vocab))
    return 0
