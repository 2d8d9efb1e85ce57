"""The bundled demo corpus: small, generated, with captions that say what is in the data.

Why generated: the demo must run on a fresh machine with no downloads, and a person must be
able to tell whether a model learned anything. So images are rendered scenes whose captions
state the shape, colour, position and count of what is drawn (a generated image can then be
checked against its caption automatically), and audio clips are the captions spoken by
espeak-ng (real speech). Without espeak-ng the audio falls back to a documented synthetic
"word melody" (one harmonic tone per word, pitch from the word's hash) so the pipeline still
runs; the report says which was used.

Layout written under `out`:
    text/docs.jsonl             {"key", "text"} one document per line
    images/{split}/{key}.png + {key}.txt     image-caption folders (split: train, heldout)
    images/{split}/{key}.json   {"shape","colour","position","count"} ground truth
    audio/{split}/{key}.wav + {key}.txt      audio-transcript folders
    corpus.json                 what was generated, with seeds and the speech source
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import tempfile
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image, ImageDraw

from trimodal.config import require

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 210, 40),
    "purple": (150, 60, 190),
    "orange": (245, 140, 30),
}
SHAPES = ("circle", "square", "triangle")
POSITIONS = ("left", "right", "top", "bottom", "center")
COUNTS = {1: "one", 2: "two"}
BACKGROUND = (245, 245, 240)


@dataclass(frozen=True)
class DemoCorpusConfig:
    n_text_docs: int = 400
    n_images: int = 600
    n_heldout_images: int = 64
    image_size: int = 64
    n_audio: int = 120
    n_heldout_audio: int = 16
    sample_rate: int = 16000
    seed: int = 0
    #: "auto": espeak-ng when installed, else the synthetic fallback; "espeak"; "synthetic".
    speech: str = "auto"

    def __post_init__(self) -> None:
        require(self.image_size >= 16, f"image_size must be >= 16, got {self.image_size}")
        require(self.speech in ("auto", "espeak", "synthetic"),
                f"speech must be auto|espeak|synthetic, got {self.speech!r}")
        for name in ("n_text_docs", "n_images", "n_heldout_images", "n_audio", "n_heldout_audio"):
            require(getattr(self, name) >= 0, f"{name} must be >= 0")


@dataclass(frozen=True)
class Scene:
    shape: str
    colour: str
    position: str
    count: int

    def caption(self) -> str:
        noun = self.shape + ("s" if self.count > 1 else "")
        article = "a" if self.count == 1 else COUNTS[self.count]
        where = "in the center" if self.position == "center" else f"on the {self.position}"
        return f"{article} {self.colour} {noun} {where}"


def random_scene(rng: np.random.Generator) -> Scene:
    return Scene(
        shape=SHAPES[rng.integers(len(SHAPES))],
        colour=list(COLOURS)[rng.integers(len(COLOURS))],
        position=POSITIONS[rng.integers(len(POSITIONS))],
        count=int(rng.integers(1, 3)),
    )


def _anchor(position: str, size: int) -> tuple[float, float]:
    third = size / 3
    return {
        "left": (third * 0.75, size / 2), "right": (size - third * 0.75, size / 2),
        "top": (size / 2, third * 0.75), "bottom": (size / 2, size - third * 0.75),
        "center": (size / 2, size / 2),
    }[position]


def render_scene(scene: Scene, size: int, rng: np.random.Generator) -> Image.Image:
    """Draw the scene; small jitter in place and size keeps images from being identical."""
    img = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(img)
    cx, cy = _anchor(scene.position, size)
    radius = size * (0.16 if scene.count == 1 else 0.11) * float(rng.uniform(0.85, 1.15))
    horizontal = scene.position in ("top", "bottom", "center")
    offsets = [0.0] if scene.count == 1 else [-1.15, 1.15]
    for off in offsets:
        x = cx + (off * radius if horizontal else 0) + float(rng.uniform(-1.5, 1.5))
        y = cy + (0 if horizontal else off * radius) + float(rng.uniform(-1.5, 1.5))
        box = [x - radius, y - radius, x + radius, y + radius]
        fill = COLOURS[scene.colour]
        if scene.shape == "circle":
            draw.ellipse(box, fill=fill)
        elif scene.shape == "square":
            draw.rectangle(box, fill=fill)
        else:
            draw.polygon([(x, y - radius), (x - radius, y + radius), (x + radius, y + radius)], fill=fill)
    return img


_SUBJECTS = ["the cat", "a small robot", "my neighbour", "the old sailor", "a curious child",
             "the teacher", "our team", "the river", "a quiet town", "the red bird"]
_VERBS = ["walks to", "looks at", "paints", "builds", "remembers", "follows", "finds", "describes"]
_OBJECTS = ["the market", "a blue door", "three green apples", "the tall tower", "a warm coat",
            "the morning train", "an empty box", "the garden"]
_ENDINGS = ["every day.", "before the rain.", "with great care.", "in the evening.",
            "after lunch.", "without a word."]


def text_document(rng: np.random.Generator) -> str:
    """A few template sentences: enough structure for a tiny model to learn, readable output."""
    n = int(rng.integers(2, 6))
    sentences = []
    for _ in range(n):
        s = (f"{_SUBJECTS[rng.integers(len(_SUBJECTS))]} {_VERBS[rng.integers(len(_VERBS))]} "
             f"{_OBJECTS[rng.integers(len(_OBJECTS))]} {_ENDINGS[rng.integers(len(_ENDINGS))]}")
        sentences.append(s[0].upper() + s[1:])
    return " ".join(sentences)


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def speak(text: str, sample_rate: int, seed: int) -> np.ndarray:
    """Real speech from espeak-ng, resampled to `sample_rate`; voice speed varies by seed."""
    from scipy.signal import resample_poly

    speed = 150 + (seed % 5) * 10
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-s", str(speed), "-w", str(wav), text],
                       check=True, capture_output=True, timeout=60)
        audio, sr = sf.read(wav, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if sr != sample_rate:
        g = math.gcd(sr, sample_rate)
        audio = resample_poly(audio, sample_rate // g, sr // g).astype(np.float32)
    return audio


def word_melody(text: str, sample_rate: int) -> np.ndarray:
    """Fallback without espeak-ng: one 0.18 s harmonic tone per word, pitch from the word."""
    pieces = []
    t = np.arange(int(0.18 * sample_rate)) / sample_rate
    envelope = np.sin(np.pi * t / t[-1]) ** 2
    for word in text.split():
        f0 = 110 + (zlib.crc32(word.encode()) % 200)
        tone = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 5))
        pieces += [0.2 * envelope * tone, np.zeros(int(0.04 * sample_rate))]
    return np.concatenate(pieces).astype(np.float32)


def generate(out: str | Path, cfg: DemoCorpusConfig = DemoCorpusConfig()) -> dict:
    """Write the demo corpus under `out` (idempotent: an existing complete corpus is kept)."""
    out = Path(out)
    marker = out / "corpus.json"
    if marker.exists():
        info = json.loads(marker.read_text())
        if info.get("config") == asdict(cfg):
            return info
    rng = np.random.default_rng(cfg.seed)

    text_dir = out / "text"
    text_dir.mkdir(parents=True, exist_ok=True)
    with open(text_dir / "docs.jsonl", "w") as f:
        for i in range(cfg.n_text_docs):
            f.write(json.dumps({"key": f"doc{i:05d}", "text": text_document(rng)}) + "\n")

    for split, n in (("train", cfg.n_images), ("heldout", cfg.n_heldout_images)):
        d = out / "images" / split
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            scene = random_scene(rng)
            key = f"{split}_img{i:05d}"
            render_scene(scene, cfg.image_size, rng).save(d / f"{key}.png")
            (d / f"{key}.txt").write_text(scene.caption())
            (d / f"{key}.json").write_text(json.dumps(asdict(scene)))

    use_espeak = cfg.speech == "espeak" or (cfg.speech == "auto" and espeak_available())
    if cfg.speech == "espeak" and not espeak_available():
        raise RuntimeError("speech='espeak' but espeak-ng is not installed (apt-get install espeak-ng)")
    for split, n in (("train", cfg.n_audio), ("heldout", cfg.n_heldout_audio)):
        d = out / "audio" / split
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            text = random_scene(rng).caption()
            key = f"{split}_aud{i:05d}"
            audio = speak(text, cfg.sample_rate, i) if use_espeak else word_melody(text, cfg.sample_rate)
            sf.write(d / f"{key}.wav", audio, cfg.sample_rate, subtype="PCM_16")
            (d / f"{key}.txt").write_text(text)

    info = {"config": asdict(cfg), "speech_source": "espeak-ng" if use_espeak else "synthetic word melody"}
    marker.write_text(json.dumps(info, indent=2))
    return info


def dominant_colour(image: Image.Image) -> str | None:
    """Name of the palette colour covering most non-background pixels (None if blank).

    Used to check generated images against their captions: a pixel counts for the nearest
    palette colour when it is far enough from the background.
    """
    arr = np.asarray(image.convert("RGB"), dtype=np.float32).reshape(-1, 3)
    bg = np.asarray(BACKGROUND, dtype=np.float32)
    fg = arr[np.linalg.norm(arr - bg, axis=1) > 60]
    if len(fg) < 4:
        return None
    palette = np.asarray(list(COLOURS.values()), dtype=np.float32)
    nearest = np.argmin(((fg[:, None, :] - palette[None]) ** 2).sum(-1), axis=1)
    return list(COLOURS)[int(np.bincount(nearest, minlength=len(palette)).argmax())]
