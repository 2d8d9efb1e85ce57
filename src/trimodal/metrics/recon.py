"""Reconstruction benchmark: run tokenizers over a held-out set and compare them side by side.

Why a runner on top of `evaluate_pairs`: choosing a tokenizer (the paper's MoVQ vs FSQ vs LFQ,
DAC with fewer or more codebooks) is a trade between reconstruction quality and token count,
and the numbers are only comparable when every tokenizer sees the same files, the same
preprocessing and the same metric code. So one call takes several tokenizers
(`KIND:PATH[:n_q=N][:label=NAME]`), streams each over the same files (encode -> decode ->
metrics, never holding the whole set), and writes one comparison table per modality (rows:
tokenizer, codebook size, tokens per item; columns: metrics), a JSON record with everything
that produced the numbers, and an HTML page with examples.

Robustness: an unreadable file, or an item the tokenizer fails on, is counted and skipped
(`failures`), and a metric failing on one item is recorded as missing by the metric library;
neither kills the run. A tokenizer that cannot be loaded at all is a configuration error and
is reported before any work starts.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import platform
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from trimodal.config import ConfigError, require
from trimodal.io import resolve_device
from trimodal.tokenizers.spec import TokenizerSpec, load_tokenizer, parse_tokenizer_spec  # noqa: F401

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
FID_NOTE = ("FID compares the Inception feature statistics of the originals and the "
            "reconstructions. On sets of fewer than a few thousand images it is biased upward and "
            "noisy: compare only rows with the same n and the same extractor.")


# --- configuration ------------------------------------------------------------------------
@dataclass
class ReconBenchConfig:
    tokenizers: list[TokenizerSpec]
    #: Folders (searched recursively) or single files; each tokenizer reads the files of its
    #: modality (images: png/jpg/webp/bmp, audio: wav/flac/ogg) from all of them.
    data: list[str]
    #: At most this many files per modality (the first in sorted order); None: all.
    limit: int | None = None
    #: True: FID required; False: off; None: computed when Inception weights are installed.
    fid: bool | None = None
    fid_weights: str | None = None
    #: Images are centre-cropped/resized to this size; None: each tokenizer's own image_size.
    image_size: int | None = None
    resize_policy: str | None = None
    batch_size: int = 16
    #: Items per tokenizer kept for the HTML page.
    examples: int = 4
    device: str = "auto"
    bf16: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        require(bool(self.tokenizers), "give at least one tokenizer")
        require(bool(self.data), "give at least one data folder")
        require(self.limit is None or self.limit >= 1, f"limit must be >= 1, got {self.limit}")
        require(self.image_size is None or self.image_size >= 1, "image_size must be >= 1")
        require(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        require(self.examples >= 0, f"examples must be >= 0, got {self.examples}")


# --- results ------------------------------------------------------------------------------
@dataclass
class Failure:
    """An item left out of a tokenizer's numbers: `stage` is read, encode or decode."""

    key: str
    stage: str
    error: str


@dataclass
class TokenizerResult:
    label: str
    spec: TokenizerSpec
    modality: str
    #: name, hash, parameter count, architecture summary.
    config: dict[str, Any]
    codebook_size: int
    n_q: int
    rates: dict[str, float]
    n_files: int
    n_items: int
    failures: list[Failure]
    #: metric -> mean/median/std/min/max/n/n_missing (the metric library's summary).
    metrics: dict[str, dict[str, Any]]
    set_metrics: dict[str, Any]
    codebook: dict[str, Any]
    throughput: dict[str, float]
    metric_info: dict[str, Any]
    items: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["spec"] = asdict(self.spec)
        d["n_failed"] = len(self.failures)
        return d


@dataclass
class Example:
    """One item kept for the HTML page: the original and each tokenizer's reconstruction."""

    key: str
    modality: str
    original: Any
    sample_rate: int = 0
    reconstructions: dict[str, Any] = field(default_factory=dict)


@dataclass
class ReconBenchResult:
    rows: list[TokenizerResult]
    examples: list[Example]
    settings: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"benchmark": "recon", "settings": self.settings,
                "fid_note": FID_NOTE if any("fid" in r.set_metrics for r in self.rows) else None,
                "tokenizers": [r.to_dict() for r in self.rows]}


# --- data ---------------------------------------------------------------------------------
def list_data_files(paths: Sequence[str], suffixes: Sequence[str], limit: int | None = None) -> list[tuple[str, Path]]:
    """(key, path) of every file with one of `suffixes` under `paths`, sorted; the key is the
    path relative to its folder (prefixed by the folder name if two folders share one)."""
    found: dict[str, Path] = {}
    for p in paths:
        root = Path(p)
        if not root.exists():
            raise ConfigError(f"data path not found: {p}")
        files = [root] if root.is_file() else sorted(f for f in root.rglob("*") if f.is_file())
        for f in files:
            if f.suffix.lower() not in suffixes:
                continue
            key = f.name if root.is_file() else str(f.relative_to(root))
            if key in found:
                key = f"{root.name}/{key}"
            found[key] = f
    items = sorted(found.items())
    return items[:limit] if limit is not None else items


def _batches(it: Iterable[Any], n: int) -> Iterator[list[Any]]:
    it = iter(it)
    while batch := list(itertools.islice(it, n)):
        yield batch


def _describe(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _robust_map(fn: Callable[[list[Any]], list[Any]], inputs: list[Any], keys: list[str],
                stage: str, failures: list[Failure]) -> list[Any | None]:
    """`fn` over a batch; if the batch fails, item by item, so one bad item costs only itself.
    Returns one output per input, None where the item failed (recorded in `failures`)."""
    try:
        out = fn(inputs)
        if len(out) != len(inputs):
            raise RuntimeError(f"{stage} returned {len(out)} results for {len(inputs)} inputs")
        return list(out)
    except Exception as err:  # noqa: BLE001 - isolate the bad item below
        if len(inputs) == 1:
            failures.append(Failure(keys[0], stage, _describe(err)))
            log.warning("%s failed on %s: %s; skipped", stage, keys[0], _describe(err))
            return [None]
        log.debug("batch %s failed (%s); retrying item by item", stage, _describe(err))
    results: list[Any | None] = []
    for x, k in zip(inputs, keys):
        results.extend(_robust_map(fn, [x], [k], stage, failures))
    return results


class _Codes:
    """Running histogram of code ids per codebook (usage/perplexity without storing codes)."""

    def __init__(self, n_books: int, size: int):
        self.counts = np.zeros((n_books, size), dtype=np.int64)

    def add(self, codes: np.ndarray) -> None:
        """codes: [n_books, ...] ids."""
        codes = np.asarray(codes).reshape(self.counts.shape[0], -1)
        for q in range(self.counts.shape[0]):
            self.counts[q] += np.bincount(codes[q].astype(np.int64), minlength=self.counts.shape[1])

    def summary(self) -> dict[str, Any]:
        """Usage (fraction of codes seen) and perplexity (exp entropy) per codebook and mean."""
        usage, perplexity = [], []
        for c in self.counts:
            total = c.sum()
            usage.append(float(np.count_nonzero(c) / c.size))
            p = c[c > 0] / total if total else np.ones(1)
            perplexity.append(float(np.exp(-(p * np.log(p)).sum())))
        return {"usage": float(np.mean(usage)), "perplexity": float(np.mean(perplexity)),
                "per_codebook": {"usage": usage, "perplexity": perplexity},
                "n_codes": int(self.counts.sum())}


@dataclass
class _ExamplePicker:
    """Chooses the HTML examples: the first `n` items the first tokenizer of a modality got
    through (so a broken first file does not leave the page empty); later tokenizers show the
    same items."""

    n: int
    keys: set[str] = field(default_factory=set)
    frozen: bool = False

    def wants(self, key: str) -> bool:
        if key in self.keys:
            return True
        if self.frozen or len(self.keys) >= self.n:
            return False
        self.keys.add(key)
        return True


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _n_params(module: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


# --- image --------------------------------------------------------------------------------
def _bench_image(spec: TokenizerSpec, label: str, tok: Any, files: list[tuple[str, Path]],
                 cfg: ReconBenchConfig, fid_net: Any, device: torch.device,
                 keep: _ExamplePicker) -> tuple[TokenizerResult, dict[str, tuple[Any, Any]]]:
    from trimodal.metrics import image as im
    from trimodal.tokenizers.image import load_image
    from trimodal.tokenizers.image.preprocess import preprocess, to_pil

    size = cfg.image_size or tok.config.image_size
    policy = cfg.resize_policy or tok.config.resize_policy
    grid = tok.grid(size)
    failures: list[Failure] = []
    codes = _Codes(1, tok.vocab_size)
    kept: dict[str, tuple[Any, Any]] = {}
    timing = {"seconds": 0.0, "items": 0}

    def read(path: Path) -> torch.Tensor:
        return preprocess(load_image(str(path), where=str(path)), size, policy)

    def encode(xs: list[torch.Tensor]) -> list[torch.Tensor]:
        batch = torch.stack(xs)
        if device.type == "cuda":
            batch = batch.pin_memory()
        return list(tok.encode_tensor(batch.to(device, non_blocking=True)))

    def decode(ids: list[torch.Tensor]) -> list[torch.Tensor]:
        return list(tok.decode_tensor(torch.stack(ids)))

    def stream() -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        bar = tqdm(total=len(files), desc=f"bench {label}", unit="img", disable=not cfg.progress)
        for batch in _batches(files, cfg.batch_size):
            keys, xs = [], []
            for key, path in batch:
                try:
                    xs.append(read(path))
                    keys.append(key)
                except (ValueError, OSError) as err:
                    failures.append(Failure(key, "read", _describe(err)))
                    log.warning("skipped unreadable image: %s", _describe(err))
            bar.update(len(batch))
            if not xs:
                continue
            t0 = time.perf_counter()
            ids = _robust_map(encode, xs, keys, "encode", failures)
            ok = [i for i, v in enumerate(ids) if v is not None]
            recons = _robust_map(decode, [ids[i] for i in ok], [keys[i] for i in ok], "decode", failures)
            _sync(device)
            timing["seconds"] += time.perf_counter() - t0
            for i, recon in zip(ok, recons):
                if recon is None:
                    continue
                timing["items"] += 1
                codes.add(ids[i].cpu().numpy()[None])
                original, reconstruction = to_pil(xs[i])[0], to_pil(recon)[0]
                if keep.wants(keys[i]):
                    kept[keys[i]] = (original, reconstruction)
                yield keys[i], np.asarray(original), np.asarray(reconstruction)
        bar.close()

    k_it, o_it, r_it = itertools.tee(stream(), 3)
    report = im.evaluate_pairs((o for _, o, _ in o_it), (r for _, _, r in r_it),
                               (k for k, _, _ in k_it), fid=fid_net, batch_size=cfg.batch_size,
                               progress=False)
    n_tokens = grid[0] * grid[1]
    result = TokenizerResult(
        label=label, spec=spec, modality="image",
        config={"name": tok.name, "hash": tok.hash, "params": _n_params(tok),
                "quantizer": tok.config.quantizer.kind,
                "downsample_factor": tok.downsample_factor, "image_size": size,
                "resize_policy": policy, "grid": list(grid)},
        codebook_size=tok.vocab_size, n_q=1,
        rates={"tokens_per_item": float(n_tokens),
               "bits_per_item": float(n_tokens * math.log2(tok.vocab_size))},
        n_files=len(files), n_items=report.n_items, failures=failures,
        metrics={k: asdict(v) for k, v in report.summary.items()},
        set_metrics=report.set_metrics, codebook=codes.summary(),
        throughput=_throughput(timing, "images_per_second"),
        metric_info=report.info, items=[asdict(r) for r in report.items])
    return result, kept


def _throughput(timing: dict[str, float], per_item: str, audio_seconds: float = 0.0) -> dict[str, float]:
    secs = timing["seconds"]
    out = {"encode_decode_seconds": round(secs, 4), "items": int(timing["items"]),
           per_item: float(timing["items"] / secs) if secs > 0 else float("nan")}
    if audio_seconds:
        out["audio_seconds"] = round(audio_seconds, 3)
        out["realtime_factor"] = float(audio_seconds / secs) if secs > 0 else float("nan")
    return out


# --- audio --------------------------------------------------------------------------------
def read_audio(path: Path, sample_rate: int) -> np.ndarray:
    """A file as mono float32 at `sample_rate`; ValueError naming the file if unusable."""
    import soundfile as sf

    from trimodal.tokenizers.audio import to_codec_input

    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as err:  # noqa: BLE001 - soundfile raises several types for bad files
        raise ValueError(f"{path}: not a readable audio file ({_describe(err)})") from err
    if data.size == 0:
        raise ValueError(f"{path}: empty audio file")
    if not np.isfinite(data).all():
        raise ValueError(f"{path}: NaN or infinite samples")
    return to_codec_input(data.T, sr, sample_rate)


def _bench_audio(spec: TokenizerSpec, label: str, tok: Any, files: list[tuple[str, Path]],
                 cfg: ReconBenchConfig, device: torch.device,
                 keep: _ExamplePicker) -> tuple[TokenizerResult, dict[str, tuple[Any, Any]]]:
    from trimodal.metrics import audio as am

    sr = tok.sample_rate
    frame_rate = sr / tok.hop_length
    failures: list[Failure] = []
    codes = _Codes(tok.n_q, tok.vocab_size)
    kept: dict[str, tuple[Any, Any]] = {}
    timing = {"seconds": 0.0, "items": 0}
    totals = {"audio_seconds": 0.0, "tokens": 0}

    def stream() -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        bar = tqdm(total=len(files), desc=f"bench {label}", unit="clip", disable=not cfg.progress)
        for batch in _batches(files, cfg.batch_size):
            keys, waves = [], []
            for key, path in batch:
                try:
                    waves.append(read_audio(path, sr))
                    keys.append(key)
                except (ValueError, OSError) as err:
                    failures.append(Failure(key, "read", _describe(err)))
                    log.warning("skipped unreadable audio: %s", _describe(err))
            bar.update(len(batch))
            if not waves:
                continue
            t0 = time.perf_counter()
            coded = _robust_map(lambda ws: tok.encode(ws, device=device), waves, keys, "encode", failures)
            ok = [i for i, c in enumerate(coded) if c is not None]
            recons = _robust_map(
                lambda cs: tok.decode([c for c, _ in cs], [n for _, n in cs], device=device),
                [(coded[i], waves[i].size) for i in ok], [keys[i] for i in ok], "decode", failures)
            timing["seconds"] += time.perf_counter() - t0
            for i, recon in zip(ok, recons):
                if recon is None:
                    continue
                timing["items"] += 1
                totals["audio_seconds"] += waves[i].size / sr
                totals["tokens"] += int(coded[i].size)
                codes.add(coded[i])
                if keep.wants(keys[i]):
                    kept[keys[i]] = (waves[i], recon)
                yield keys[i], waves[i], recon
        bar.close()

    k_it, o_it, r_it = itertools.tee(stream(), 3)
    report = am.evaluate_pairs((o for _, o, _ in o_it), (r for _, _, r in r_it), sr,
                               (k for k, _, _ in k_it), progress=False)
    n = max(1, timing["items"])
    result = TokenizerResult(
        label=label, spec=spec, modality="audio",
        config={"name": tok.name, "hash": tok.hash, "params": _n_params(tok.model),
                "sample_rate": sr, "hop_length": tok.hop_length,
                "n_codebooks": tok.config.n_codebooks, "codebook_dim": tok.config.codebook_dim,
                "encoder_dim": tok.config.encoder_dim, "decoder_dim": tok.config.decoder_dim},
        codebook_size=tok.vocab_size, n_q=tok.n_q,
        rates={"frame_rate": frame_rate,
               "tokens_per_second": am.tokens_per_second(tok.n_q, frame_rate),
               "bitrate": am.bitrate(tok.n_q, frame_rate, tok.vocab_size),
               "tokens_per_item": totals["tokens"] / n},
        n_files=len(files), n_items=report.n_items, failures=failures,
        metrics={k: asdict(v) for k, v in report.summary.items()},
        set_metrics=report.set_metrics, codebook=codes.summary(),
        throughput=_throughput(timing, "clips_per_second", totals["audio_seconds"]),
        metric_info=report.info, items=[asdict(r) for r in report.items])
    return result, kept


# --- the runner ---------------------------------------------------------------------------
def _labels(specs: Sequence[TokenizerSpec], toks: Sequence[Any]) -> list[str]:
    labels, seen = [], {}
    for spec, tok in zip(specs, toks):
        label = spec.label or tok.name
        seen[label] = seen.get(label, 0) + 1
        labels.append(label if seen[label] == 1 else f"{label}#{seen[label]}")
    return labels


def _fid_network(cfg: ReconBenchConfig, device: torch.device) -> tuple[Any, dict[str, Any]]:
    if cfg.fid is False:
        return None, {"enabled": False, "reason": "switched off (--no-fid)"}
    from trimodal.metrics.fid_network import load_fid_inception

    try:
        net = load_fid_inception(cfg.fid_weights, device=device)
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        if cfg.fid:
            raise ConfigError(f"FID requested but not available: {err}") from err
        log.warning("FID skipped: %s", err)
        return None, {"enabled": False, "reason": str(err)}
    return net, {"enabled": True, "extractor": net.info}


def run_recon_bench(cfg: ReconBenchConfig) -> ReconBenchResult:
    """Load every tokenizer (failing early on a bad one), then run each over the files of its
    modality and collect metrics, rates, code statistics, throughput and HTML examples."""
    t_start = time.perf_counter()
    device = resolve_device(cfg.device)
    toks = [load_tokenizer(spec, device, cfg.bf16) for spec in cfg.tokenizers]
    labels = _labels(cfg.tokenizers, toks)
    modalities = {spec.modality for spec in cfg.tokenizers}
    files = {m: list_data_files(cfg.data, IMAGE_SUFFIXES if m == "image" else AUDIO_SUFFIXES, cfg.limit)
             for m in modalities}
    for m, fs in files.items():
        if not fs:
            raise ConfigError(f"no {m} files ({'/'.join(IMAGE_SUFFIXES if m == 'image' else AUDIO_SUFFIXES)}) "
                              f"under {cfg.data}")
        log.info("%d %s files under %s", len(fs), m, cfg.data)
    fid_net, fid_info = _fid_network(cfg, device) if "image" in modalities else (None, {})
    keep = {m: _ExamplePicker(cfg.examples) for m in files}

    rows: list[TokenizerResult] = []
    examples: dict[tuple[str, str], Example] = {}
    for spec, tok, label in zip(cfg.tokenizers, toks, labels):
        log.info("benchmarking %s (%s)", label, spec.path)
        if spec.modality == "image":
            row, kept = _bench_image(spec, label, tok, files["image"], cfg, fid_net, device, keep["image"])
        else:
            row, kept = _bench_audio(spec, label, tok, files["audio"], cfg, device, keep["audio"])
        rows.append(row)
        keep[spec.modality].frozen = True
        sr = tok.sample_rate if spec.modality == "audio" else 0
        for key, (original, recon) in kept.items():
            ex = examples.setdefault((spec.modality, key), Example(key, spec.modality, original, sr))
            if sr and sr != ex.sample_rate:  # codecs at other rates: shown at the page's rate
                from trimodal.metrics.audio import resample

                recon = resample(np.asarray(recon, np.float64), sr, ex.sample_rate).astype(np.float32)
            ex.reconstructions[label] = recon
        log.info("%s: %d items, %d failed, %s", label, row.n_items, len(row.failures),
                 {k: round(v["mean"], 4) for k, v in row.metrics.items() if v["mean"] is not None})
    ordered = [examples[k] for k in sorted(examples)]
    settings = {
        "data": list(cfg.data), "limit": cfg.limit, "image_size": cfg.image_size,
        "resize_policy": cfg.resize_policy, "batch_size": cfg.batch_size, "device": str(device),
        "bf16": cfg.bf16, "fid": fid_info, "tokenizers": [asdict(s) for s in cfg.tokenizers],
        "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": round(time.perf_counter() - t_start, 2),
    }
    return ReconBenchResult(rows, ordered, settings)


# --- outputs ------------------------------------------------------------------------------
#: (column title, how to get the value from a row, format)
_Col = tuple[str, Callable[[TokenizerResult], Any], str]


def _metric(name: str) -> Callable[[TokenizerResult], Any]:
    return lambda r: r.metrics.get(name, {}).get("mean")


def _fid(r: TokenizerResult) -> Any:
    return r.set_metrics.get("fid", {}).get("fid")


_COMMON_HEAD: list[_Col] = [("tokenizer", lambda r: r.label, "s"),
                            ("codebook", lambda r: r.codebook_size, "d")]
IMAGE_COLUMNS: list[_Col] = _COMMON_HEAD + [
    ("tokens/image", lambda r: r.rates["tokens_per_item"], ".0f"),
    ("PSNR dB", _metric("psnr"), ".2f"),
    ("SSIM", _metric("ssim"), ".3f"),
    ("FID", _fid, ".1f"),
    ("usage", lambda r: r.codebook["usage"], ".3f"),
    ("perplexity", lambda r: r.codebook["perplexity"], ".1f"),
    ("img/s", lambda r: r.throughput["images_per_second"], ".1f"),
    ("n", lambda r: f"{r.n_items}/{r.n_files}", "s"),
]
AUDIO_COLUMNS: list[_Col] = _COMMON_HEAD + [
    ("n_q", lambda r: r.n_q, "d"),
    ("tokens/s", lambda r: r.rates["tokens_per_second"], ".1f"),
    ("kbps", lambda r: r.rates["bitrate"] / 1000, ".2f"),
    ("PESQ-wb", _metric("pesq_wb"), ".3f"),
    ("PESQ-nb", _metric("pesq_nb"), ".3f"),
    ("STOI", _metric("stoi"), ".3f"),
    ("mel dist", _metric("mel_distance"), ".3f"),
    ("SI-SDR dB", _metric("si_sdr"), ".2f"),
    ("usage", lambda r: r.codebook["usage"], ".3f"),
    ("perplexity", lambda r: r.codebook["perplexity"], ".1f"),
    ("x realtime", lambda r: r.throughput["realtime_factor"], ".1f"),
    ("n", lambda r: f"{r.n_items}/{r.n_files}", "s"),
]


def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if spec == "s":
        return str(value)
    return format(value, spec)


def comparison_rows(rows: Sequence[TokenizerResult], modality: str) -> list[dict[str, str]]:
    """One dict per tokenizer, column title -> formatted value (the paper-style table)."""
    cols = IMAGE_COLUMNS if modality == "image" else AUDIO_COLUMNS
    return [{title: _fmt(get(r), spec) for title, get, spec in cols}
            for r in rows if r.modality == modality]


def _notes(rows: Sequence[TokenizerResult]) -> list[str]:
    notes = []
    for r in rows:
        missing = {k: v["n_missing"] for k, v in r.metrics.items() if v["n_missing"]}
        stages: dict[str, int] = {}
        for f in r.failures:
            stages[f.stage] = stages.get(f.stage, 0) + 1
        if stages:
            notes.append(f"{r.label}: {len(r.failures)} of {r.n_files} files skipped ({stages})")
        if missing:
            notes.append(f"{r.label}: metric values missing {missing}")
    return notes


def markdown(result: ReconBenchResult) -> str:
    """The comparison tables (one per modality) with notes on skipped items and FID."""
    lines: list[str] = []
    for modality in ("image", "audio"):
        table = comparison_rows(result.rows, modality)
        if not table:
            continue
        heads = list(table[0])
        lines += [f"### {modality} tokenizers", "", "| " + " | ".join(heads) + " |",
                  "|" + "|".join("---" if h == "tokenizer" else "---:" for h in heads) + "|"]
        lines += ["| " + " | ".join(row[h] for h in heads) + " |" for row in table]
        lines.append("")
        if modality == "image":
            fid = next((r.set_metrics["fid"] for r in result.rows if r.set_metrics.get("fid")), None)
            if fid and fid.get("fid") is not None:
                lines += [f"FID over n = {fid['n_a']} image pairs, "
                          f"{fid['extractor'].get('extractor', '?')}. {FID_NOTE}", ""]
            elif not result.settings.get("fid", {}).get("enabled", True):
                lines += [f"FID not computed: {result.settings['fid'].get('reason')}", ""]
    notes = _notes(result.rows)
    if notes:
        lines += ["Skipped and missing:", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def _spectrogram_figure(ex: Example):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clips = [("original", ex.original)] + list(ex.reconstructions.items())
    # Small panels: a spectrogram of noisy audio compresses badly, and the page must stay small.
    fig, axes = plt.subplots(1, len(clips), figsize=(2.2 * len(clips), 1.8), sharey=True, squeeze=False)
    vmax = None
    for ax, (title, wave) in zip(axes[0], clips):
        wave = np.asarray(wave, dtype=np.float64).reshape(-1)
        nfft = 256 if wave.size >= 256 else max(16, 2 ** int(math.log2(max(wave.size, 16))))
        with np.errstate(divide="ignore"):  # exact silence (decoder padding) is -inf dB
            spec, _, _, img = ax.specgram(wave, NFFT=nfft, Fs=ex.sample_rate, noverlap=nfft // 2,
                                          cmap="magma", scale="dB")
        if vmax is None:  # the original sets the colour scale, so the panels compare
            vmax = float(10 * np.log10(np.max(spec) + 1e-20))
        img.set_clim(vmax - 80, vmax)
        ax.set_facecolor("black")  # exact digital silence is -inf dB: show it as the floor
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("s", fontsize=7)
        ax.tick_params(labelsize=6)
    axes[0][0].set_ylabel("Hz", fontsize=7)
    fig.tight_layout()
    return fig


def write_html(result: ReconBenchResult, root: str | Path, title: str = "Reconstruction benchmark") -> Path:
    """index.html under `root`: the tables, then each example's original next to every
    tokenizer's reconstruction (images side by side; audio players and spectrograms)."""
    from trimodal.report.html import Report

    report = Report(title, Path(root))
    for modality in ("image", "audio"):
        table = comparison_rows(result.rows, modality)
        if table:
            report.heading(f"{modality} tokenizers")
            report.table(table)
    for note in _notes(result.rows):
        report.paragraph(note, note=True)
    if any(r.set_metrics.get("fid") for r in result.rows):
        report.paragraph(FID_NOTE, note=True)
    images = [e for e in result.examples if e.modality == "image"]
    if images:
        report.heading("image examples (original, then each tokenizer)")
        for ex in images:
            report.images([(ex.original, f"{ex.key} original")]
                          + [(im, label) for label, im in ex.reconstructions.items()])
    clips = [e for e in result.examples if e.modality == "audio"]
    if clips:
        report.heading("audio examples (original, then each tokenizer)")
        for ex in clips:
            report.paragraph(ex.key)
            report.audio([(ex.original, ex.sample_rate, "original")]
                         + [(w, ex.sample_rate, label) for label, w in ex.reconstructions.items()])
            report.figure(_spectrogram_figure(ex), f"{ex.key}: spectrograms")
    report.preformatted(json.dumps(result.settings, indent=1, default=str))
    return report.write()


def write_outputs(result: ReconBenchResult, out: str | Path, name: str = "recon") -> dict[str, str]:
    """`out/<name>.json`, `out/<name>.md` and `out/index.html` (+ assets/)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / f"{name}.json", out / f"{name}.md"
    json_path.write_text(json.dumps(result.to_dict(), indent=1, default=str) + "\n")
    md_path.write_text(markdown(result))
    html_path = write_html(result, out)
    return {"json": str(json_path), "markdown": str(md_path), "html": str(html_path)}
