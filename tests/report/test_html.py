import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

from trimodal.report.html import Report


def test_report_writes_page_and_assets_and_escapes(tmp_path):
    r = Report("demo <report>", tmp_path)
    r.heading("Tables & things")
    r.table([{"name": "<b>x</b>", "psnr": 31.234567, "n": 3}])
    r.images([(Image.new("RGB", (8, 8), (255, 0, 0)), "red")])
    r.audio([(np.zeros(1600), 16000, "silence")])
    fig, ax = plt.subplots()
    ax.plot([1, 2, 3])
    r.figure(fig, "a line")
    page = r.write().read_text()
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page
    assert "31.23" in page and "demo &lt;report&gt;" in page
    assets = sorted(p.name for p in (tmp_path / "assets").iterdir())
    assert assets == ["0001.png", "0002.wav", "0003.png"]
    for name in assets:
        assert f"assets/{name}" in page
