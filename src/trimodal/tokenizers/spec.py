"""One way to name and load a tokenizer: a spec string and a factory.

    text:MODEL                          SentencePiece model file (our text tokenizer)
    image:FOLDER                        our image tokenizer (config.json + model.safetensors)
    audio:FILE.safetensors[:n_q=N]      our DAC export
    dac:FILE.pth[:n_q=N]                an upstream DAC weight file (= audio:dac:FILE.pth)
    MODALITY:FORMAT:PATH[:key=value]    any registered format, e.g. image:diffusers-vq:DIR

Every spec may end in `:label=NAME` (what a benchmark table calls it); audio specs take
`:n_q=N` (codebooks kept). Options are only read from the end, so a path may hold colons
(`s3://bucket/a:b.pth`). A CLI flag that names one modality's tokenizer (`--image-tokenizer`)
takes the same string without the modality (`diffusers-vq:DIR`, or just a path).

Adding a format is one entry in `FORMATS`: a function (spec, device) -> tokenizer that
imports its code when called, so naming a format never imports an optional package. A
tokenizer that cannot be loaded is a ConfigError naming the spec, raised before any work.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from trimodal.config import ConfigError, require

if TYPE_CHECKING:
    import torch

MODALITIES = ("text", "image", "audio")
#: Spec prefixes that are not a modality: shorthand for MODALITY:FORMAT.
ALIASES = {"dac": ("audio", "dac")}
#: The format a spec without one means, per modality.
DEFAULT_FORMAT = {"text": "sentencepiece", "image": "trimodal", "audio": "trimodal"}
#: Options every spec takes; others are the format's own (`TokenizerSpec.option`).
COMMON_OPTIONS = ("label",)
_OPTION = re.compile(r":([A-Za-z_][A-Za-z0-9_]*)=([^:]*)$")


@dataclass(frozen=True)
class TokenizerSpec:
    """A tokenizer to load: `kind` is its modality or an alias (`dac`); `format` "" means the
    kind's default. `options` holds the format's own `key=value` options as (key, value)."""

    kind: str
    path: str
    n_q: int | None = None
    label: str = ""
    format: str = ""
    options: tuple[tuple[str, str], ...] = field(default=())

    def __post_init__(self) -> None:
        kinds = sorted([*MODALITIES, *ALIASES])
        require(self.kind in kinds, f"tokenizer kind must be one of {kinds}, got {self.kind!r}")
        require(bool(self.path), "tokenizer path is empty")
        require(self.n_q is None or self.n_q >= 1, f"n_q must be >= 1, got {self.n_q}")
        require(self.n_q is None or self.modality == "audio", "n_q applies to audio tokenizers only")
        known = sorted(FORMATS[self.modality])
        require(self.resolved_format in FORMATS[self.modality],
                f"{self.modality} tokenizer format {self.resolved_format!r} is not known; known: {known}")

    @property
    def modality(self) -> str:
        return ALIASES[self.kind][0] if self.kind in ALIASES else self.kind

    @property
    def resolved_format(self) -> str:
        """The format to load with: the given one, else the alias's or the modality's default."""
        if self.format:
            return self.format
        return ALIASES[self.kind][1] if self.kind in ALIASES else DEFAULT_FORMAT[self.kind]

    def option(self, key: str, default: str | None = None) -> str | None:
        return dict(self.options).get(key, default)

    def check_options(self, allowed: tuple[str, ...] = ()) -> None:
        """ConfigError for a format option the loader does not know (a typo must not pass)."""
        unknown = sorted(set(dict(self.options)) - set(allowed))
        if unknown:
            raise ConfigError(f"tokenizer spec {self}: unknown option(s) {unknown} for "
                              f"{self.modality}:{self.resolved_format}; known: {sorted(allowed) or 'none'}")

    def __str__(self) -> str:
        parts = [self.kind] + ([self.format] if self.format else []) + [self.path]
        parts += [f"n_q={self.n_q}"] if self.n_q is not None else []
        parts += [f"{k}={v}" for k, v in self.options]
        parts += [f"label={self.label}"] if self.label else []
        return ":".join(parts)


def parse_tokenizer_spec(text: str, modality: str | None = None) -> TokenizerSpec:
    """A spec string -> TokenizerSpec (see the module docstring).

    `modality` given: `text` lacks the modality prefix (a CLI flag such as `--image-tokenizer
    diffusers-vq:DIR` or a plain path), and the spec must be of that modality."""
    original = text
    if modality is not None:
        require(modality in MODALITIES, f"modality must be one of {MODALITIES}, got {modality!r}")
        if not text:
            raise ConfigError(f"{modality} tokenizer: empty path")
        kind, rest = modality, text
    else:
        kind, sep, rest = text.partition(":")
        kind = kind.strip().lower()
        if not sep or not rest:
            raise ConfigError(f"tokenizer spec {original!r}: expected KIND:[FORMAT:]PATH[:n_q=N][:label=NAME] "
                              f"with KIND one of {sorted([*MODALITIES, *ALIASES])}")
    options: dict[str, str] = {}
    while (m := _OPTION.search(rest)) is not None:
        if m.group(1) in options:
            raise ConfigError(f"tokenizer spec {original!r}: {m.group(1)} given twice")
        options[m.group(1)] = m.group(2)
        rest = rest[: m.start()]
    fmt = ""
    target = ALIASES[kind][0] if kind in ALIASES else kind
    head, sep, tail = rest.partition(":")
    if sep and kind not in ALIASES and head in FORMATS.get(target, {}):
        fmt, rest = head, tail
    n_q = None
    if "n_q" in options:
        try:
            n_q = int(options.pop("n_q"))
        except ValueError as err:
            raise ConfigError(f"tokenizer spec {original!r}: n_q must be an integer") from err
    label = options.pop("label", "")
    return TokenizerSpec(kind=kind, path=rest, n_q=n_q, label=label, format=fmt,
                         options=tuple(sorted(options.items())))


# --- loading ------------------------------------------------------------------------------
Loader = Callable[[TokenizerSpec, "torch.device | None"], Any]


def _sentencepiece(spec: TokenizerSpec, device: "torch.device | None") -> Any:
    from trimodal.tokenizers.text import TextTokenizer

    spec.check_options()
    return TextTokenizer.load(spec.path)


def _trimodal_image(spec: TokenizerSpec, device: "torch.device | None") -> Any:
    from trimodal.tokenizers.image import ImageTokenizer

    spec.check_options()
    return ImageTokenizer.load(spec.path, map_location=device if device is not None else "cpu").eval()


def _with_n_q(tok: Any, spec: TokenizerSpec, device: "torch.device | None") -> Any:
    if spec.n_q is not None and spec.n_q != tok.n_q:
        tok = tok.with_n_q(spec.n_q)
    if device is not None:
        tok.model.to(device)
    return tok


def _trimodal_audio(spec: TokenizerSpec, device: "torch.device | None") -> Any:
    from trimodal.tokenizers.audio import AudioTokenizer

    spec.check_options()
    return _with_n_q(AudioTokenizer.load(spec.path), spec, device)


def _dac(spec: TokenizerSpec, device: "torch.device | None") -> Any:
    from trimodal.tokenizers.audio import AudioTokenizer

    spec.check_options()
    return _with_n_q(AudioTokenizer.from_dac_weights(spec.path, spec.n_q), spec, device)


#: modality -> format name -> loader. Adding a format (say a public codec behind an adapter
#: in tokenizers/pretrained/) is one line here.
FORMATS: dict[str, dict[str, Loader]] = {
    "text": {"sentencepiece": _sentencepiece},
    "image": {"trimodal": _trimodal_image},
    "audio": {"trimodal": _trimodal_audio, "dac": _dac},
}


def load_tokenizer(spec: TokenizerSpec | str, device: "torch.device | str | None" = None,
                   bf16: bool = False) -> Any:
    """The tokenizer a spec names, in eval mode, on `device` (None: where it loads, the CPU).

    bf16: autocast the codec's convolutions on CUDA (`use_bf16`; ids stay exact, see each
    tokenizer). Any failure to load is a ConfigError that names the spec."""
    import torch

    if isinstance(spec, str):
        spec = parse_tokenizer_spec(spec)
    dev = torch.device(device) if device is not None else None
    loader = FORMATS[spec.modality][spec.resolved_format]
    try:
        tok = loader(spec, dev)
    except ConfigError:
        raise
    except FileNotFoundError as err:
        raise ConfigError(f"{spec.modality} tokenizer {spec.path}: not found ({err})") from err
    except (ValueError, RuntimeError, OSError, KeyError) as err:
        raise ConfigError(f"{spec.modality} tokenizer {spec.path}: cannot load: {err}") from err
    if hasattr(tok, "use_bf16"):
        tok.use_bf16 = bf16
    return tok


def load_for(modality: str, flag_value: str, device: "torch.device | str | None" = None,
             n_q: int | None = None, bf16: bool = False) -> Any:
    """What a `--<modality>-tokenizer` flag names (see `parse_tokenizer_spec(modality=...)`),
    with `n_q` (a separate `--n-q` flag) applied to audio."""
    spec = parse_tokenizer_spec(flag_value, modality)
    if n_q is not None:
        spec = TokenizerSpec(spec.kind, spec.path, n_q, spec.label, spec.format, spec.options)
    return load_tokenizer(spec, device, bf16)
