"""Install descript-audio-codec without letting torchaudio replace our torch.

Why this exists: `descript-audio-codec` needs `torchaudio`, and every current torchaudio
wheel on PyPI (2.11.0 is the last release) pins `torch==2.11.0` and ships native libraries
built against CUDA (`libc10_cuda.so`). Beside the CPU torch we use, a normal install either
downgrades torch to a multi-GB CUDA build or leaves a torchaudio whose native library fails
to load, so `import dac` fails.

torchaudio's `_extension` module treats absent native libraries as "extension not built" and
runs in pure-Python mode, which is all `dac` needs (its codec is plain torch; resampling goes
through `julius`). So we install the three packages with `--no-deps` (their other needs come
from the `audio` extra) and delete torchaudio's native libraries. The result is verified by
importing `dac` and building a model. Run with the venv's python: it installs into itself.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

PINNED = ["descript-audio-codec==1.0.0", "descript-audiotools==0.7.2", "torchaudio==2.11.0"]


def _torchaudio_lib_dir() -> Path | None:
    spec = importlib.util.find_spec("torchaudio")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "lib"


def main() -> int:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", *PINNED], check=True
    )
    lib = _torchaudio_lib_dir()
    if lib is None:
        print("install_audio_stack: torchaudio did not install", file=sys.stderr)
        return 1
    removed = sorted(p.name for p in lib.glob("*.so"))
    for name in removed:
        (lib / name).unlink()
    if removed:
        print(f"install_audio_stack: removed torchaudio native libs {removed} (pure-Python mode)")
    check = "import dac; m = dac.DAC(sample_rate=16000, encoder_rates=[2,4,5,8], decoder_rates=[8,5,4,2]); print('dac ok')"
    result = subprocess.run([sys.executable, "-W", "ignore", "-c", check], capture_output=True, text=True)
    if result.returncode != 0:
        print("install_audio_stack: `import dac` failed after install:\n" + result.stderr, file=sys.stderr)
        return 1
    print("install_audio_stack: " + result.stdout.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
