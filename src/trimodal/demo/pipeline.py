"""`trimodal demo`: the whole pipeline on the bundled demo corpus, resumable stage by stage.

corpus -> tokenizers (text, image, audio) -> tokenization jobs -> vocabulary -> pack + shards
-> MDM training -> sampling (text, T2I, T2S) -> reconstruction metrics -> HTML report.

Every stage calls the same library functions as the matching `trimodal` subcommand, so the
demo doubles as a worked example of running each stage on a real corpus. Sizes live in
`DemoConfig`; `DemoConfig.tiny()` is the seconds-long variant the tests run.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trimodal.config import require
from trimodal.corpora.demo import DemoCorpusConfig
from trimodal.demo.stages import StageRunner
from trimodal.io import resolve_device

log = logging.getLogger(__name__)


@dataclass
class DemoConfig:
    corpus: DemoCorpusConfig = field(default_factory=DemoCorpusConfig)
    text_vocab: int = 512
    image_quantizer: str = "movq"
    image_size: int = 32
    #: 1200: the tokenizer keeps the dominant colour of 98% of held-out scenes (500 steps: 55%,
    #: objects come back grey-brown), which the text-to-image colour check depends on.
    image_steps: int = 1200
    audio_steps: int = 250
    #: Codebooks of the audio codec used in the MDM's sequences (fewer -> fewer tokens).
    audio_n_q: int = 2
    seq_len: int = 256
    mdm_d_model: int = 192
    mdm_layers: int = 4
    mdm_heads: int = 4
    mdm_steps: int = 650
    mdm_batch: int = 16
    mdm_lr: float = 2e-3
    #: Condition drop while training, so that classifier-free guidance is available; 0 = off.
    mdm_cond_drop: float = 0.1
    #: CFG scale for text-to-image sampling; None = no guidance (needs mdm_cond_drop > 0).
    #: Off: at the demo's scale w = 1.5 and 3 did not raise the colour match (27% / 25% vs 27%).
    t2i_cfg: float | None = None
    #: Mixing weights of the text / image-text / audio-text shard sets.
    mix: dict[str, float] = field(default_factory=lambda: {"text": 0.25, "image_text": 0.5, "audio_text": 0.25})
    n_t2i: int = 48
    n_t2s: int = 4
    n_text: int = 4
    fid: bool = True
    threads: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        require(self.image_quantizer in ("fsq", "lfq", "movq"), f"image_quantizer must be fsq|lfq|movq, got {self.image_quantizer!r}")
        require(self.seq_len >= 64, f"seq_len must be >= 64, got {self.seq_len}")
        require(set(self.mix) <= {"text", "image_text", "audio_text"} and all(w >= 0 for w in self.mix.values()),
                f"mix keys must be text/image_text/audio_text with weights >= 0, got {self.mix}")
        require(0.0 <= self.mdm_cond_drop <= 1.0, f"mdm_cond_drop must be in [0, 1], got {self.mdm_cond_drop}")

    @classmethod
    def tiny(cls) -> "DemoConfig":
        """Every stage, in seconds: for tests, not for looking at."""
        return cls(corpus=DemoCorpusConfig(n_text_docs=40, n_images=48, n_heldout_images=8, n_audio=8,
                                           n_heldout_audio=2, speech="synthetic"),
                   text_vocab=300, image_steps=4, audio_steps=2, mdm_d_model=32, mdm_layers=1, mdm_heads=2,
                   mdm_steps=4, mdm_batch=4, n_t2i=4, n_t2s=1, n_text=1, fid=False, seq_len=160)


def shuffled_match_rate(wanted: list[str], got: list[str | None]) -> float:
    """Colour match rate expected if the images ignored their captions: sum over colours of
    P(caption colour) x P(generated colour). The fair baseline for the T2I check: a model that
    draws only two colours scores well above 1/6 against captions of those colours."""
    n = len(wanted)
    if n == 0:
        return 0.0
    return sum(wanted.count(c) * got.count(c) for c in set(wanted)) / (n * n)


class Demo:
    """The stages; each returns a small JSON-able summary that the report shows."""

    def __init__(self, out: str | Path, cfg: DemoConfig):
        self.out = Path(out)
        self.cfg = cfg
        self.runner = StageRunner(self.out)
        self.corpus_dir = self.out / "corpus"
        self.tok_dir = self.out / "tokenizers"
        self.tables = self.out / "tables"
        self.shards = self.out / "shards"
        self.mdm_dir = self.out / "mdm"
        self.samples = self.out / "samples"

    # --- stages ---------------------------------------------------------------------
    def corpus(self) -> dict[str, Any]:
        from trimodal.corpora.demo import generate

        return generate(self.corpus_dir, self.cfg.corpus)

    def text_tokenizer(self) -> dict[str, Any]:
        from trimodal.corpora.text import open_text_corpus, iter_texts
        from trimodal.tokenizers.text import TextTokenizer

        texts = list(iter_texts(open_text_corpus(str(self.corpus_dir / "text" / "docs.jsonl"), "jsonl")))
        for sub in ("images/train", "audio/train"):
            texts += [p.read_text() for p in sorted((self.corpus_dir / sub).glob("*.txt"))]
        tok = TextTokenizer.train(texts, vocab_size=self.cfg.text_vocab)
        self.tok_dir.mkdir(parents=True, exist_ok=True)
        tok.save(str(self.tok_dir / "text.model"))
        return {"vocab_size": tok.vocab_size, "hash": tok.hash, "training_texts": len(texts)}

    def image_tokenizer(self) -> dict[str, Any]:
        from trimodal.tokenizers.image.train import cpu_preset, train

        tcfg = cpu_preset(self.cfg.image_quantizer, self.cfg.image_size)
        tcfg.steps = self.cfg.image_steps
        tcfg.data = str(self.corpus_dir / "images" / "train")
        tcfg.ckpt_every = max(1, min(tcfg.ckpt_every, self.cfg.image_steps))
        tcfg.log_every = max(1, min(tcfg.log_every, self.cfg.image_steps))
        result = train(tcfg, out=str(self.tok_dir / "image"), resume=True)
        return {"quantizer": self.cfg.image_quantizer, "vocab_size": result.tokenizer.vocab_size,
                "grid": list(result.tokenizer.grid(self.cfg.image_size)), "steps": result.step,
                "metrics": result.metrics, "hash": result.hash}

    def audio_tokenizer(self) -> dict[str, Any]:
        from trimodal.tokenizers.audio_train import AudioTrainConfig, train_audio_tokenizer

        acfg = AudioTrainConfig(data=[str(self.corpus_dir / "audio" / "train")], steps=self.cfg.audio_steps,
                                checkpoint_every=max(1, min(100, self.cfg.audio_steps)),
                                log_every=max(1, min(10, self.cfg.audio_steps)), seed=self.cfg.seed)
        tok = train_audio_tokenizer(acfg, str(self.tok_dir / "audio"), resume=True)
        return {"sample_rate": tok.sample_rate, "n_codebooks": tok.n_q, "codebook_size": tok.vocab_size,
                "hop_length": tok.hop_length, "hash": tok.hash}

    def tokenize(self) -> dict[str, Any]:
        from trimodal.corpora.audio import AudioCorpusOptions, open_audio_corpus
        from trimodal.corpora.image import ImageCorpusOptions, open_image_corpus
        from trimodal.corpora.text import open_text_corpus
        from trimodal.jobs.audio import AudioEncoder
        from trimodal.jobs.image import ImageEncoder
        from trimodal.jobs.runner import JobConfig, run_job
        from trimodal.jobs.text import TextEncoder

        text_tok, image_tok, audio_tok = self._tokenizers()
        jobs = {
            "text": (open_text_corpus(str(self.corpus_dir / "text" / "docs.jsonl"), "jsonl", name="demo_text"),
                     TextEncoder(text_tok)),
            "image": (open_image_corpus(str(self.corpus_dir / "images" / "train"), "folder",
                                        ImageCorpusOptions(name="demo_images", unit_size=200)),
                      ImageEncoder(image_tok, text_tok, image_size=self.cfg.image_size)),
            "audio": (open_audio_corpus(str(self.corpus_dir / "audio" / "train"), "folder",
                                        AudioCorpusOptions(name="demo_speech", unit_size=100)),
                      AudioEncoder(audio_tok.with_n_q(self.cfg.audio_n_q), text_tok)),
        }
        reports = {}
        for kind, (corpus, encoder) in jobs.items():
            job = JobConfig(out=str(self.tables / kind), batch_size=16, workers=0, device="auto", progress=True)
            reports[kind] = run_job(corpus, encoder, job)
        return {"reports": reports}

    def pack(self) -> dict[str, Any]:
        from trimodal.packing.packer import Packer, PackerConfig
        from trimodal.packing.vocab import Vocab
        from trimodal.shards.pack import list_tables, pack_tables
        from trimodal.shards.writer import WriterConfig

        text_tok, image_tok, audio_tok = self._tokenizers()
        vocab = Vocab.from_sizes(text_tok.vocab_size, image_tok.vocab_size, audio_tok.vocab_size,
                                 self.cfg.audio_n_q,
                                 tokenizers={"text": text_tok.hash, "image": image_tok.hash, "audio": audio_tok.hash})
        self.out.mkdir(parents=True, exist_ok=True)
        vocab.save(str(self.out / "vocab.json"))
        packer = Packer(PackerConfig(length=self.cfg.seq_len, mode="pack", audio_codebooks=self.cfg.audio_n_q), vocab)
        tables = list_tables([str(self.tables / k / "tables") for k in ("text", "image", "audio")])
        sets = pack_tables(tables, packer, str(self.shards), WriterConfig(max_samples=500, overwrite=True))
        return {"vocab": json.loads(vocab.to_json())["ranges"] | {"size": vocab.size, "hash": vocab.hash},
                "sets": [{k: v for k, v in s.items() if k != "url"} for s in sets],
                "pack_stats": packer.stats.as_dict()}

    def train(self) -> dict[str, Any]:
        from trimodal.mdm_core.config import DataConfig, MaskingConfig, ModelConfig, OptimConfig, TrainConfig
        from trimodal.mdm_core.trainer import train
        from trimodal.packing.vocab import Vocab
        from trimodal.shards import ReaderConfig, Source, make_loader
        from trimodal.shards.pack import SETS_NAME

        vocab = Vocab.load(str(self.out / "vocab.json"))
        listing = json.loads((self.shards / SETS_NAME).read_text())
        sources = [Source(str(self.shards / s["path"]), weight=self.cfg.mix.get(s["task"], 0.0), name=s["task"])
                   for s in listing["sets"] if self.cfg.mix.get(s["task"], 0.0) > 0]
        c = self.cfg
        tcfg = TrainConfig(
            model=ModelConfig(d_model=c.mdm_d_model, n_layers=c.mdm_layers, n_heads=c.mdm_heads, max_len=c.seq_len),
            masking=MaskingConfig(schedule="linear", cond_drop=c.mdm_cond_drop),
            optim=OptimConfig(lr=c.mdm_lr, warmup_steps=max(1, c.mdm_steps // 20), weight_decay=0.01),
            data=DataConfig(batch_size=c.mdm_batch, num_workers=0, seed=c.seed),
            out_dir=str(self.mdm_dir), max_steps=c.mdm_steps, log_every=max(1, min(10, c.mdm_steps)),
            eval_every=0, ckpt_every=max(1, min(300, c.mdm_steps)), seed=c.seed, device="auto",
        )
        loader = make_loader(sources, vocab, batch_size=c.mdm_batch, length=c.seq_len,
                             config=ReaderConfig(seed=c.seed, infinite=True), num_workers=0, drop_last=True)
        result = train(tcfg, vocab, loader)
        return {"steps": result.step, "first_loss": result.losses[0] if result.losses else None,
                "last_loss": float(np.mean(result.losses[-20:])) if result.losses else None,
                "sources": [asdict(s) for s in sources]}

    def sample(self) -> dict[str, Any]:
        import soundfile as sf

        from trimodal.corpora.demo import COLOURS, dominant_colour, random_scene
        from trimodal.mdm_core.sampler import Sampler, load_model, model_logits_fn
        from trimodal.mdm_core.sampling_config import default_config

        text_tok, image_tok, audio_tok = self._tokenizers()
        audio_tok = audio_tok.with_n_q(self.cfg.audio_n_q)
        device = resolve_device("auto")
        model, vocab = load_model(str(self.mdm_dir), device=device)
        sampler = Sampler(model_logits_fn(model, vocab), vocab, text=text_tok, image=image_tok, audio=audio_tok,
                          device=device, pad_to=self.cfg.seq_len)
        rng = np.random.default_rng(self.cfg.seed + 1)
        self.samples.mkdir(parents=True, exist_ok=True)

        # T2I: captions drawn fresh; does the dominant colour of the image follow the caption?
        scenes = [random_scene(rng) for _ in range(self.cfg.n_t2i)]
        captions = [s.caption() for s in scenes]
        grid = image_tok.grid(self.cfg.image_size)
        image_cfg = default_config("image", {"seed": self.cfg.seed, "cfg_scale": self.cfg.t2i_cfg})
        images = sampler.t2i(captions, grid, image_cfg)
        hits, rows = 0, []
        for i, (scene, img) in enumerate(zip(scenes, images)):
            img.save(self.samples / f"t2i_{i:03d}.png")
            got = dominant_colour(img)
            hits += got == scene.colour
            rows.append({"caption": captions[i], "dominant_colour": got, "match": got == scene.colour})
        t2i = {"n": len(scenes), "colour_match_rate": hits / max(1, len(scenes)),
               "chance_rate": 1 / len(COLOURS),
               "shuffled_rate": shuffled_match_rate([s.colour for s in scenes],
                                                    [r["dominant_colour"] for r in rows]),
               "samples": rows}

        # T2S: spoken captions; length from the mean held-out clip.
        heldout = sorted((self.corpus_dir / "audio" / "heldout").glob("*.txt"))[: self.cfg.n_t2s]
        texts = [p.read_text() for p in heldout]
        frames = self._typical_frames(audio_tok)
        waves = sampler.t2s(texts, self.cfg.audio_n_q, frames, default_config("audio", {"seed": self.cfg.seed}))
        for i, w in enumerate(waves):
            sf.write(self.samples / f"t2s_{i:03d}.wav", np.asarray(w, dtype=np.float32), audio_tok.sample_rate)

        # Text continuation.
        prompts = ["The cat", "A small robot", "Our team", "The river"][: self.cfg.n_text]
        conts = sampler.text(prompts, 24, default_config("text", {"seed": self.cfg.seed}))
        text_rows = [{"prompt": p, "continuation": c} for p, c in zip(prompts, conts)]
        (self.samples / "text.json").write_text(json.dumps(text_rows, indent=2))
        return {"t2i": t2i, "t2s": {"texts": texts, "frames": frames}, "text": text_rows}

    def recon(self) -> dict[str, Any]:
        from PIL import Image

        from trimodal.corpora.demo import dominant_colour
        from trimodal.metrics import audio as am
        from trimodal.metrics import image as im

        _, image_tok, audio_tok = self._tokenizers()
        paths = sorted((self.corpus_dir / "images" / "heldout").glob("*.png"))
        originals = [Image.open(p).convert("RGB").resize((self.cfg.image_size,) * 2, Image.BICUBIC) for p in paths]
        with torch.inference_mode():
            ids = image_tok.encode_pil(originals, self.cfg.image_size)
            recon = image_tok.decode(ids)
        fid = None
        if self.cfg.fid:
            from trimodal.metrics.fid_network import load_fid_inception
            try:
                fid = load_fid_inception()
            except Exception as err:  # weights missing: report without FID rather than fail
                log.warning("FID skipped: %s", err)
        image_report = im.evaluate_pairs(originals, recon, [p.stem for p in paths], fid=fid, progress=False)
        ids_np = np.stack(ids)
        kept = [dominant_colour(o) == dominant_colour(r) for o, r in zip(originals, recon)]
        image_summary = {"colour_retention": sum(kept) / max(1, len(kept)),
                         "metrics": image_report.to_dict()["summary"],
                         "set_metrics": image_report.to_dict().get("set_metrics", {}),
                         "codebook_usage": im.codebook_usage(ids_np, image_tok.vocab_size),
                         "tokens_per_image": int(np.prod(ids_np.shape[1:]))}

        import soundfile as sf

        self.samples.mkdir(parents=True, exist_ok=True)
        wavs = sorted((self.corpus_dir / "audio" / "heldout").glob("*.wav"))
        clips = [sf.read(p, dtype="float32")[0] for p in wavs]
        rows = []
        for n_q in sorted({1, self.cfg.audio_n_q, audio_tok.n_q}):
            tok = audio_tok.with_n_q(n_q)
            codes = tok.encode(clips)
            recon_audio = tok.decode(codes, [len(c) for c in clips])
            rep = am.evaluate_pairs(clips, recon_audio, tok.sample_rate, [p.stem for p in wavs], progress=False)
            frame_rate = tok.sample_rate / tok.hop_length
            rows.append({"n_q": n_q, "tokens_per_second": am.tokens_per_second(n_q, frame_rate),
                         "bitrate": am.bitrate(n_q, frame_rate, tok.vocab_size),
                         "metrics": rep.to_dict()["summary"]})
            if n_q == self.cfg.audio_n_q:
                for i, w in enumerate(recon_audio[:4]):
                    sf.write(self.samples / f"recon_audio_{i}.wav", np.asarray(w, np.float32), tok.sample_rate)
        for i, (o, r) in enumerate(zip(originals[:8], recon[:8])):
            o.save(self.samples / f"recon_orig_{i}.png")
            r.save(self.samples / f"recon_img_{i}.png")
        return {"image": image_summary, "audio": rows}

    def report(self) -> dict[str, Any]:
        from trimodal.demo.report import write_report

        path = write_report(self)
        return {"path": str(path)}

    # --- helpers --------------------------------------------------------------------
    def _tokenizers(self):
        from trimodal.tokenizers.spec import load_for

        return (load_for("text", str(self.tok_dir / "text.model")),
                load_for("image", str(self.tok_dir / "image" / "tokenizer")),
                load_for("audio", str(self.tok_dir / "audio" / "tokenizer.safetensors")))

    def _typical_frames(self, audio_tok) -> int:
        import soundfile as sf

        lengths = [sf.info(p).frames for p in sorted((self.corpus_dir / "audio" / "heldout").glob("*.wav"))]
        n_samples = int(np.median(lengths)) if lengths else audio_tok.sample_rate
        budget = (self.cfg.seq_len - 16) // self.cfg.audio_n_q  # leave room for TASK/BOS/EOS and text
        return max(1, min(audio_tok.frames(n_samples), budget))

    def run(self) -> Path:
        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)
        start = time.perf_counter()
        for name in ("corpus", "text_tokenizer", "image_tokenizer", "audio_tokenizer", "tokenize", "pack",
                     "train", "sample", "recon"):
            self.runner.run(name, getattr(self, name))
        path = Path(self.report()["path"])
        log.info("demo finished in %.1f s; report: %s", time.perf_counter() - start, path)
        return path
