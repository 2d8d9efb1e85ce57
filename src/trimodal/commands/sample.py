"""`trimodal sample {text,t2i,t2s,i2t,s2t}`: generate with a trained MDM and decode the result."""

from __future__ import annotations

import argparse
import logging

from trimodal.errors import UserError

log = logging.getLogger("trimodal")

#: The modality each direction generates (its sampling defaults).
MODALITY = {"text": "text", "t2i": "image", "t2s": "audio", "i2t": "text", "s2t": "text"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sample", help="sample text, images (t2i), speech (t2s), captions (i2t) or transcripts (s2t)",
        description="Generate with a trained MDM. Settings start from the generated modality's "
                    "defaults (docs/sampling.md), then --config, then the flags below.")
    p.add_argument("task", choices=list(MODALITY))
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
    p.add_argument("--cfg-scale", "--cfg", dest="cfg_scale",
                   help="classifier-free guidance weight w, or 'none' to switch it off")
    p.add_argument("--seed", type=int)
    p.add_argument("--bf16", action="store_true", default=None, help="bf16 autocast (CUDA)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--task-token", help="TASK token to prompt with (default: the data task the model "
                                        "was trained on, e.g. image_text for t2i)")
    p.set_defaults(run=run, stage=p.prog)


def _outputs(out: str | None, default: str, n: int) -> list[str]:
    """One file name per sample: the name itself for one, `<stem>_<i>.<ext>` for a batch."""
    base = out or default
    if n == 1:
        return [base]
    stem, dot, ext = base.rpartition(".")
    return [f"{stem}_{i}.{ext}" if dot else f"{base}_{i}" for i in range(n)]


def _settings(args: argparse.Namespace, modality: str):
    """Sampling settings: the modality's defaults, then --config, then the flags."""
    import yaml

    from trimodal.config import ConfigError
    from trimodal.mdm_core.sampling_config import default_config

    overrides: dict = {}
    if args.config:
        try:
            with open(args.config) as f:
                overrides.update(yaml.safe_load(f) or {})
        except yaml.YAMLError as err:
            raise ConfigError(f"{args.config}: not valid YAML: {err}") from err
    flags = {"steps": args.steps, "schedule": args.schedule, "schedule_exponent": args.schedule_exponent,
             "temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p,
             "remasking": args.remasking, "block_length": args.block_length, "seed": args.seed,
             "bf16": args.bf16}
    overrides.update({k: v for k, v in flags.items() if v is not None})
    if args.cfg_scale is not None:
        overrides["cfg_scale"] = None if args.cfg_scale.lower() in ("none", "off") else float(args.cfg_scale)
    return default_config(modality, overrides)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from trimodal.io import resolve_device
    from trimodal.mdm_core.sampler import Sampler, load_model, model_logits_fn
    from trimodal.packing.vocab import Vocab
    from trimodal.tokenizers.spec import load_for

    task = args.task
    cfg = _settings(args, MODALITY[task])
    if task == "text" and cfg.cfg_scale is not None:
        raise UserError("classifier-free guidance needs a condition; text continuation has none")
    device = resolve_device(args.device)
    vocab = Vocab.load(args.vocab) if args.vocab else None
    model, vocab = load_model(args.checkpoint, vocab, device)
    if not args.text_tokenizer:
        raise UserError("--text-tokenizer is required")
    text_tok = load_for("text", args.text_tokenizer)
    image_tok = audio_tok = None
    if task in ("t2i", "i2t"):
        if not args.image_tokenizer:
            raise UserError("--image-tokenizer is required")
        image_tok = load_for("image", args.image_tokenizer, device=device)
    if task in ("t2s", "s2t"):
        if not args.audio_tokenizer:
            raise UserError("--audio-tokenizer is required")
        audio_tok = load_for("audio", args.audio_tokenizer, n_q=args.n_q or None)
    tasks = {task: args.task_token} if args.task_token else None
    sampler = Sampler(model_logits_fn(model, vocab), vocab, text=text_tok, image=image_tok,
                      audio=audio_tok, device=device, tasks=tasks)
    log.info("sample %s on %s with %s", task, device, cfg)

    if task in ("text", "t2i", "t2s") and not args.prompt:
        raise UserError("give at least one --prompt")
    if task == "t2i":
        if args.grid:
            h, _, w = args.grid.lower().partition("x")
            grid = (int(h), int(w or h))
        else:
            grid = image_tok.grid(image_tok.config.image_size)
        images = sampler.t2i(args.prompt, grid, cfg, progress=True)
        for img, path in zip(images, _outputs(args.out, "sample.png", len(images))):
            img.save(path)
            print(path)
        return 0
    if task == "t2s":
        import soundfile as sf

        frames = audio_tok.frames(int(round(args.seconds * audio_tok.sample_rate)))
        waves = sampler.t2s(args.prompt, audio_tok.n_q, frames, cfg, progress=True)
        for wave, path in zip(waves, _outputs(args.out, "sample.wav", len(waves))):
            sf.write(path, np.asarray(wave, dtype=np.float32), audio_tok.sample_rate)
            print(path)
        return 0
    if task == "text":
        suffixes = [args.suffix] * len(args.prompt) if args.suffix else None
        texts = sampler.text(args.prompt, args.length, cfg, suffixes, progress=True)
    elif task == "i2t":
        if not args.image:
            raise UserError("give at least one --image")
        from trimodal.tokenizers.image import load_image

        codes = image_tok.encode_pil([load_image(p, where=p) for p in args.image])
        texts = sampler.i2t(codes, args.length, cfg, progress=True)
    else:  # s2t
        if not args.audio:
            raise UserError("give at least one --audio")
        import soundfile as sf

        from trimodal.tokenizers.audio import to_codec_input

        waves = []
        for path in args.audio:
            data, sr = sf.read(path, dtype="float32", always_2d=True)
            waves.append(to_codec_input(data.T, sr, audio_tok.sample_rate))
        texts = sampler.s2t(audio_tok.encode(waves), args.length, cfg, progress=True)
    if args.out:
        for text, path in zip(texts, _outputs(args.out, args.out, len(texts))):
            with open(path, "w") as f:
                f.write(text + "\n")
            print(path)
    else:
        for text in texts:
            print(text)
    return 0
