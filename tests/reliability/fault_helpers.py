"""Deterministic kill -9 points for the reliability tests, and tiny corpora to run them on.

A *kill point* names a function (``module:attr`` or ``module:Class.method``), which call of it
(1-based) and whether the process dies just before that call or just after it returns. The
test-only wrapper `fault_cli.py` installs it in a fresh process and then runs the real
`trimodal` CLI, so the process dies by SIGKILL at exactly the dangerous moment (between a
rename and the next write, in the middle of a shard, between two checkpoint files), every
time, on any machine. Counting the calls of an uninterrupted run (`counting`) gives the
range a seeded RNG picks from.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import os
import random
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
FAULT_ENV = "TRIMODAL_TEST_KILL_AT"
#: Under torchrun: arm the kill point only in the process whose RANK is this.
FAULT_RANK_ENV = "TRIMODAL_TEST_KILL_RANK"


@dataclass(frozen=True)
class KillPoint:
    target: str  # "pkg.module:function" or "pkg.module:Class.method"
    call: int  # 1-based call number at which to die
    phase: str = "before"  # "before" the call, or "after" it returned

    def __post_init__(self) -> None:
        if self.call < 1 or self.phase not in ("before", "after") or ":" not in self.target:
            raise ValueError(f"bad kill point {self}")

    def encode(self) -> str:
        return f"{self.target}@{self.call}@{self.phase}"

    @classmethod
    def decode(cls, text: str) -> "KillPoint":
        target, call, phase = text.split("@")
        return cls(target, int(call), phase)


def _owner_and_name(target: str) -> tuple[Any, str]:
    module_name, _, path = target.partition(":")
    owner: Any = importlib.import_module(module_name)
    *parents, name = path.split(".")
    for p in parents:
        owner = getattr(owner, p)
    if not callable(getattr(owner, name, None)):
        raise ValueError(f"kill point target {target} is not a function")
    return owner, name


def wrap(target: str, before: Callable[[int], None], after: Callable[[int], None]) -> Callable[[], None]:
    """Wrap `target` so `before(n)` / `after(n)` run around its n-th call (n from 1); returns
    the function that undoes it."""
    owner, name = _owner_and_name(target)
    original = getattr(owner, name)
    calls = 0

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        nonlocal calls
        calls += 1
        n = calls
        before(n)
        result = original(*args, **kwargs)
        after(n)
        return result

    # A plain function stored on a class binds `self` through the descriptor protocol exactly
    # as the original did, so methods and module functions patch the same way.
    setattr(owner, name, wrapper)
    return lambda: setattr(owner, name, original)


def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def install(point: KillPoint) -> None:
    """Arm `point` in this process for good (the wrapper script's process dies anyway)."""
    def before(n: int) -> None:
        if point.phase == "before" and n == point.call:
            _die()

    def after(n: int) -> None:
        if point.phase == "after" and n == point.call:
            _die()

    wrap(point.target, before, after)


@contextlib.contextmanager
def counting(targets: list[str]) -> Iterator[dict[str, int]]:
    """Count the calls of `targets` during the block (an uninterrupted run)."""
    counts = {t: 0 for t in targets}
    with contextlib.ExitStack() as stack:
        for t in targets:
            def after(n: int, t: str = t) -> None:
                counts[t] = n
            stack.callback(wrap(t, lambda n: None, after))
        yield counts


def pick_kill_point(seed: int, counts: dict[str, int], phases: dict[str, tuple[str, ...]] | None = None
                    ) -> KillPoint:
    """A seeded choice of target, call number and phase among the calls an uninterrupted run made."""
    rng = random.Random(seed)
    targets = sorted(t for t, n in counts.items() if n > 0)
    target = rng.choice(targets)
    phase = rng.choice((phases or {}).get(target, ("before", "after")))
    return KillPoint(target, rng.randint(1, counts[target]), phase)


def subprocess_env(**extra: str) -> dict[str, str]:
    """One intra-op thread (bitwise-repeatable CPU math, no spin-wait on a shared box)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    env.update(extra)
    return env


def run_torchrun(nproc: int, cli_args: list[str], kill: KillPoint | None = None, kill_rank: int = 0,
                 timeout: float = 300.0) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node N -m trimodal.cli <cli_args>`, as documented; with
    `kill`, the CLI runs through fault_cli.py and rank `kill_rank` dies at that point (torchrun
    then tears the other ranks down)."""
    extra = {FAULT_ENV: kill.encode(), FAULT_RANK_ENV: str(kill_rank)} if kill else {}
    entry = [str(HERE / "fault_cli.py")] if kill else ["-m", "trimodal.cli"]
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", str(nproc), *entry, *cli_args],
                          env=subprocess_env(**extra), capture_output=True, text=True, timeout=timeout)


def run_killed(point: KillPoint, cli_args: list[str], timeout: float = 120.0) -> subprocess.CompletedProcess:
    """Run `trimodal <cli_args>` in a child that dies by SIGKILL at `point`; asserts it did."""
    proc = subprocess.run([sys.executable, str(HERE / "fault_cli.py"), *cli_args],
                          env=subprocess_env(**{FAULT_ENV: point.encode()}),
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == -signal.SIGKILL, (
        f"expected death by SIGKILL at {point}, got rc={proc.returncode}\n{proc.stderr[-3000:]}")
    return proc


# --- tiny inputs ----------------------------------------------------------------------------
WORDS = ("red green blue small large square circle moves left right up down the a of "
         "image sound speech token model data").split()


def write_text_corpus(root: Path, n_files: int = 6, docs_per_file: int = 5, seed: int = 0) -> int:
    """JSONL files (one work unit each) of short pseudo-sentences; returns the doc count."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for f in range(n_files):
        lines = [json.dumps({"text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 30)))})
                 for _ in range(docs_per_file)]
        (root / f"part{f:02d}.jsonl").write_text("\n".join(lines) + "\n")
    return n_files * docs_per_file


def train_text_tokenizer(path: Path) -> str:
    from trimodal.tokenizers.text import TextTokenizer, TextTokenizerConfig

    rng = random.Random(1)
    texts = [" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(200)]
    TextTokenizer.train(texts, config=TextTokenizerConfig(vocab_size=64, hard_vocab_limit=False, byte_fallback=False)).save(str(path))
    return str(path)


def tokenize_args(corpus: Path, tokenizer: str, out: Path, name: str = "docs") -> list[str]:
    return ["tokenize", "text", "--corpus", str(corpus), "--format", "jsonl", "--text-tokenizer", tokenizer,
            "--out", str(out), "--name", name, "--workers", "0", "--batch-size", "2", "--no-progress"]


def tables_of(out: Path) -> dict[str, list[tuple]]:
    """unit file -> its rows as comparable tuples (every field a table row carries)."""
    from trimodal.packing.table import read_table

    return {p.name: [(r.key, r.source, r.task, r.text_ids.tolist(), r.modality, r.ids.tolist(),
                      tuple(r.shape), r.tokenizer, r.tokenizer_hash) for r in read_table(str(p))]
            for p in sorted((out / "tables").glob("*.parquet"))}


def temp_files(root: Path) -> list[str]:
    """Leftovers of interrupted writes anywhere under `root` (every writer marks them .tmp)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if ".tmp" in p.name)


def shard_samples(pack_out: Path) -> dict[str, list[tuple[str, list[int], str]]]:
    """Shard-set path -> [(key, tokens, meta json)] in manifest order, read as a trainer would."""
    from trimodal.shards.manifest import read_manifest
    from trimodal.shards.pack import expand_sets
    from trimodal.shards.verify import iter_shard_samples, load_vocab_for

    result = {}
    for url in expand_sets(str(pack_out)):
        manifest = read_manifest(url)
        vocab = load_vocab_for(manifest)
        result[url[len(str(pack_out)) + 1:]] = [
            (key, tokens.tolist(), json.dumps(meta, sort_keys=True))
            for key, tokens, meta in iter_shard_samples(manifest, vocab)]
    return result


def metrics_records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def make_shard_world(root: Path) -> Path:
    """Two text sources tokenized (tables_a, tables_b), their vocab.json: what `pack` reads."""
    from trimodal.cli import main

    write_text_corpus(root / "corpus_a", n_files=3, docs_per_file=8, seed=1)
    write_text_corpus(root / "corpus_b", n_files=2, docs_per_file=8, seed=2)
    tok = train_text_tokenizer(root / "text.model")
    for name in ("a", "b"):
        assert main(tokenize_args(root / f"corpus_{name}", tok, root / f"tables_{name}", name=name)) == 0
    assert main(["vocab", "--text-tokenizer", tok, "--out", str(root / "vocab.json")]) == 0
    return root


def pack_args(world: Path, out: Path) -> list[str]:
    return ["pack", "--tables", str(world / "tables_a" / "tables"), "--tables", str(world / "tables_b" / "tables"),
            "--vocab", str(world / "vocab.json"), "--out", str(out), "--length", "32", "--shard-samples", "3"]


def train_args(shards: Path, run: Path, **over: Any) -> list[str]:
    """`trimodal train --config RUN.yaml` on a tiny model: train on set text/a, eval on text/b."""
    import yaml

    cfg = {"model": {"d_model": 32, "n_layers": 2, "n_heads": 2, "max_len": 32},
           "data": {"train": str(shards / "text" / "a"), "eval": str(shards / "text" / "b"),
                    "batch_size": 4, "num_workers": 0},
           "optim": {"lr": 3e-3, "warmup_steps": 2},
           "out_dir": str(run), "max_steps": 10, "log_every": 1, "ckpt_every": 3, "eval_every": 5,
           "eval_batches": 2, "grad_accum": 2, "progress": False, "device": "cpu", **over}
    path = run.parent / f"{run.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return ["train", "--config", str(path)]


TRAIN_COMPARED = ("step", "loss", "lr", "grad_norm", "elbo", "eval/elbo")


def curve(run: Path) -> list[dict]:
    """The metrics log without its timing fields (tokens/s, data share differ run to run)."""
    return [{k: r[k] for k in TRAIN_COMPARED if k in r} for r in metrics_records(run)]


def final_weights(run: Path) -> dict:
    from trimodal.mdm_core.checkpoint import latest_checkpoint, load_model_weights

    return load_model_weights(latest_checkpoint(str(run)))[0]
