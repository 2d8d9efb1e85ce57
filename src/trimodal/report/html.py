"""A tiny HTML report builder: sections of text, tables, image grids, audio players, plots.

Why our own: the reports are static pages a person opens from disk (no server, no JS
framework); assets are written next to the page and linked relatively, so the folder can be
copied or served as is. Everything is escaped; nothing from the data is trusted as markup.
"""

from __future__ import annotations

import html
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{border-bottom:2px solid #444}h2{margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:.9em}
th{background:#f0f0f0}td.num{text-align:right;font-variant-numeric:tabular-nums}
.grid{display:flex;flex-wrap:wrap;gap:10px}.cell{text-align:center;font-size:.8em;max-width:220px}
.cell img{image-rendering:pixelated;border:1px solid #ddd}.note{color:#666;font-size:.9em}
pre{background:#f7f7f7;padding:.5em;overflow-x:auto}
"""


@dataclass
class Report:
    """Accumulates sections, then `write()`s index.html and its assets under `root`."""

    title: str
    root: Path
    parts: list[str] = field(default_factory=list)
    _n: int = 0

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        (self.root / "assets").mkdir(parents=True, exist_ok=True)

    def _asset(self, suffix: str) -> tuple[Path, str]:
        self._n += 1
        name = f"assets/{self._n:04d}{suffix}"
        return self.root / name, name

    def heading(self, text: str) -> None:
        self.parts.append(f"<h2>{html.escape(text)}</h2>")

    def paragraph(self, text: str, note: bool = False) -> None:
        cls = ' class="note"' if note else ""
        self.parts.append(f"<p{cls}>{html.escape(text)}</p>")

    def preformatted(self, text: str) -> None:
        self.parts.append(f"<pre>{html.escape(text)}</pre>")

    def table(self, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> None:
        if not rows:
            self.paragraph("(no rows)", note=True)
            return
        columns = list(columns or rows[0].keys())
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
        body = []
        for row in rows:
            cells = []
            for c in columns:
                v = row.get(c, "")
                if isinstance(v, float):
                    cells.append(f'<td class="num">{v:.4g}</td>')
                elif isinstance(v, int) and not isinstance(v, bool):
                    cells.append(f'<td class="num">{v}</td>')
                else:
                    cells.append(f"<td>{html.escape(str(v))}</td>")
            body.append("<tr>" + "".join(cells) + "</tr>")
        self.parts.append(f"<table><tr>{head}</tr>{''.join(body)}</table>")

    def images(self, items: Sequence[tuple[Any, str]], scale: int = 2) -> None:
        """A grid of (PIL image, caption) pairs."""
        cells = []
        for img, caption in items:
            path, rel = self._asset(".png")
            img.save(path)
            w, h = img.size
            cells.append(f'<div class="cell"><img src="{rel}" width="{w * scale}" height="{h * scale}">'
                         f"<br>{html.escape(caption)}</div>")
        self.parts.append(f'<div class="grid">{"".join(cells)}</div>')

    def audio(self, items: Sequence[tuple[Any, int, str]]) -> None:
        """Audio players for (waveform float array, sample rate, caption) triples."""
        import numpy as np
        import soundfile as sf

        cells = []
        for wav, sr, caption in items:
            path, rel = self._asset(".wav")
            sf.write(path, np.asarray(wav, dtype=np.float32).reshape(-1), int(sr), subtype="PCM_16")
            cells.append(f'<div class="cell"><audio controls src="{rel}"></audio><br>{html.escape(caption)}</div>')
        self.parts.append(f'<div class="grid">{"".join(cells)}</div>')

    def figure(self, fig: Any, caption: str = "") -> None:
        """A matplotlib figure, saved as PNG (closed afterwards)."""
        import matplotlib.pyplot as plt

        path, rel = self._asset(".png")
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
        plt.close(fig)
        path.write_bytes(buf.getvalue())
        cap = f"<br>{html.escape(caption)}" if caption else ""
        self.parts.append(f'<div class="cell" style="max-width:none"><img src="{rel}">{cap}</div>')

    def write(self) -> Path:
        page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
                f"<style>{_STYLE}</style></head><body><h1>{html.escape(self.title)}</h1>"
                + "\n".join(self.parts) + "</body></html>")
        out = self.root / "index.html"
        out.write_text(page, encoding="utf-8")
        return out
