"""The study report: per-block plots and tables, scaling-law fit, frontier, critical batch.

Writes `index.html` (via `trimodal.report.html.Report`), `report.md` (same content, linking the
same PNGs under assets/) and `analysis.json` (every fitted number) into one folder, so the
folder can be committed or served as is. Works from the sweep table alone (`collect` output),
so a report can be rebuilt without retraining.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from trimodal.study import critical_batch as cb
from trimodal.study import fit as fitmod
from trimodal.study.sweep import SweepConfig, SweepPoint

log = logging.getLogger(__name__)

MODALITY_METRICS = {"all": "eval/elbo", "text": "eval/elbo/text", "image": "eval/elbo/image",
                    "audio": "eval/elbo/audio"}


class _Doc:
    """HTML and markdown side by side: every call adds the same content to both."""

    def __init__(self, title: str, root: Path):
        from trimodal.report.html import Report

        self.root = Path(root)
        self.html = Report(title, self.root)
        self.md = [f"# {title}", ""]

    def heading(self, text: str) -> None:
        self.html.heading(text)
        self.md += [f"## {text}", ""]

    def paragraph(self, text: str, note: bool = False) -> None:
        self.html.paragraph(text, note)
        self.md += [f"*{text}*" if note else text, ""]

    def table(self, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> None:
        rows = [{k: _fmt(v) for k, v in r.items()} for r in rows]
        self.html.table(rows, columns)
        if not rows:
            self.md += ["(no rows)", ""]
            return
        cols = list(columns or rows[0].keys())
        self.md += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        self.md += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
        self.md.append("")

    def figure(self, fig, caption: str = "") -> None:
        assets = self.root / "assets"
        before = set(assets.glob("*.png"))
        self.html.figure(fig, caption)
        new = sorted(set(assets.glob("*.png")) - before)
        if new:
            self.md += [f"![{caption}](assets/{new[-1].name})", ""]
            if caption:
                self.md += [f"*{caption}*", ""]

    def write(self) -> Path:
        (self.root / "report.md").write_text("\n".join(self.md) + "\n", encoding="utf-8")
        return self.html.write()


def _fmt(v: Any) -> Any:
    """Table cells: 4 significant digits for floats (HTML formats floats itself)."""
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return float(f"{v:.4g}")
    return v


# --- figures --------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _x_values(values: list[Any]) -> tuple[list[float], list[str] | None]:
    """Numeric axis values as they are; anything else as category positions with labels."""
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return [float(v) for v in values], None
    labels = []
    for v in values:
        if str(v) not in labels:
            labels.append(str(v))
    return [float(labels.index(str(v))) for v in values], labels


def block_figure(rows: list[dict], points: dict[str, SweepPoint], block: str):
    """Final per-modality loss vs the block's first axis, one line per value of the others."""
    plt = _plt()
    pts = [points[r["name"]] for r in rows]
    keys = list(pts[0].axes)
    xkey, others = keys[0], keys[1:]
    xs, labels = _x_values([p.axes[xkey] for p in pts])
    fig, axs = plt.subplots(1, 4, figsize=(16, 3.4))
    for ax, (mod, metric) in zip(axs, MODALITY_METRICS.items()):
        lines: dict[str, list[tuple[float, float]]] = {}
        for x, p, r in zip(xs, pts, rows):
            if r.get(metric) is None:
                continue
            name = ", ".join(f"{k}={p.axes[k]}" for k in others) or block
            lines.setdefault(name, []).append((x, float(r[metric])))
        for name, xy in lines.items():
            xy.sort()
            ax.plot([a for a, _ in xy], [b for _, b in xy], "o-", label=name)
        ax.set_title(f"{mod}: {metric}")
        ax.set_xlabel(xkey)
        if labels is not None:
            ax.set_xticks(range(len(labels)))
            ax.set_xticklabels(labels, rotation=20)
        elif min(xs) > 0 and max(xs) / min(xs) >= 8:
            ax.set_xscale("log")
    axs[0].set_ylabel("nats / maskable token")
    if any(len(ax.get_legend_handles_labels()[0]) > 1 for ax in axs):
        axs[-1].legend(fontsize=7)
    fig.subplots_adjust(wspace=0.3)  # cheap; savefig trims the margins (tight_layout costs seconds)
    return fig


def curves_figure(curves: list[dict], names: list[str], labels: dict[str, str]):
    plt = _plt()
    fig, axs = plt.subplots(1, 4, figsize=(16, 3.4))
    for ax, (mod, metric) in zip(axs, MODALITY_METRICS.items()):
        for name in names:
            cs = sorted((c for c in curves if c["name"] == name and c.get(metric) is not None),
                        key=lambda c: c["tokens"])
            if cs:
                ax.plot([c["tokens"] for c in cs], [c[metric] for c in cs], ".-", label=labels[name])
        ax.set_title(f"{mod}: held-out loss vs tokens")
        ax.set_xlabel("tokens seen")
        ax.set_xscale("log")
    if len(names) <= 12:
        axs[-1].legend(fontsize=6)
    fig.subplots_adjust(wspace=0.3)  # cheap; savefig trims the margins (tight_layout costs seconds)
    return fig


def scaling_figure(N, D, L, law: fitmod.ScalingLaw):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    cmap = plt.get_cmap("viridis")
    sizes = sorted(set(N))
    dd = np.geomspace(min(D) / 1.5, max(D) * 1.5, 50)
    for i, n in enumerate(sizes):
        c = cmap(i / max(1, len(sizes) - 1))
        sel = [j for j in range(len(N)) if N[j] == n]
        ax.plot([D[j] for j in sel], [L[j] for j in sel], "o", color=c, label=f"N={n:.3g}")
        ax.plot(dd, law.loss(n, dd), "-", color=c, alpha=0.7)
    ax.set_xscale("log")
    ax.set_xlabel("tokens D")
    ax.set_ylabel("held-out loss (nats / token)")
    ax.set_title("sweep points and the fitted L(N, D)")
    ax.legend(fontsize=7)
    fig.subplots_adjust(wspace=0.3)  # cheap; savefig trims the margins (tight_layout costs seconds)
    return fig


def frontier_figure(law: fitmod.ScalingLaw, boot: fitmod.Bootstrap | None, N, D):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    nn = np.geomspace(min(min(N) / 3, 1e4), 1e10, 60)
    ax.plot(nn, law.d_opt(nn), "-", color="C0", label=f"ours: D* = {law.frontier_G:.3g} N^{law.frontier_exponent:.2f}")
    if boot is not None and boot.n_ok > 2:
        lg, e = boot.samples["log10_G"], boot.samples["frontier_exponent"]
        band = np.array([np.clip(gi + ei * np.log10(nn), -300, 300) for gi, ei in zip(lg, e)])
        band = band[np.all(np.isfinite(band), axis=1)]
        q = (1 - boot.level) / 2
        if len(band) > 2:
            ax.fill_between(nn, 10 ** np.quantile(band, q, axis=0), 10 ** np.quantile(band, 1 - q, axis=0),
                            color="C0", alpha=0.2, label=f"ours, {boot.level:.0%} bootstrap band")
    ax.plot(nn, fitmod.paper_d_opt(nn), "--", color="C3", label="paper: D* = 7754 N^0.84")
    ax.plot(nn, fitmod.AR_TOKENS_PER_PARAM * nn, ":", color="k", label="autoregressive: 20 N")
    ax.plot(N, D, "x", color="C2", label="sweep points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(1e3, 1e14)  # a degenerate fit (beta -> 0) would otherwise flatten the others
    ax.set_xlabel("parameters N (non-embedding)")
    ax.set_ylabel("compute-optimal tokens D*")
    ax.legend(fontsize=7)
    fig.subplots_adjust(wspace=0.3)  # cheap; savefig trims the margins (tight_layout costs seconds)
    return fig


def batch_figure(study: cb.CriticalBatchStudy, size_key: str, horizon_key: str,
                 compare: list[tuple[str, list[float], list[float]]]):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for i, r in enumerate(study.results):
        label = f"N={float(r.group[size_key]):.3g}, D={float(r.group[horizon_key]):.3g}"
        ax.plot(r.batches, r.losses, "o-", color=f"C{i}", label=label)
        ax.axvline(r.crossing or r.critical, color=f"C{i}", ls=":", alpha=0.7)
    for j, (label, bs, ls) in enumerate(compare):
        ax.plot(bs, ls, "s--", color="0.4", alpha=0.8, label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("physical batch (sequences / step), equal tokens")
    ax.set_ylabel("held-out loss (nats / token)")
    ax.set_title("loss at equal tokens vs batch (dotted: critical batch estimate)")
    ax.legend(fontsize=7)
    fig.subplots_adjust(wspace=0.3)  # cheap; savefig trims the margins (tight_layout costs seconds)
    return fig


# --- analysis -----------------------------------------------------------------------------
def fit_block(rows: list[dict], metric: str, n_boot: int) -> dict | None:
    """The scaling-law fit on one block's rows; None (with a note) when it cannot be fitted."""
    ok = [r for r in rows if r.get(metric) is not None and math.isfinite(r[metric])]
    N, D, L = ([float(r[k]) for r in ok] for k in ("N", "D", metric))
    try:
        res = fitmod.fit_scaling_law(N, D, L)
    except ValueError as err:
        return {"error": str(err)}
    boot = fitmod.bootstrap(N, D, L, n_boot=n_boot) if n_boot > 0 else None
    return {"fit": res, "boot": boot, "N": N, "D": D, "L": L}


def write_report(cfg: SweepConfig, points: list[SweepPoint], rows: list[dict], curves: list[dict],
                 root: str | Path, data_info: dict | None = None, command: str = "") -> Path:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    by_name = {p.name: p for p in points}
    rows = [r for r in rows if r["name"] in by_name]
    doc = _Doc(f"trimodal design-space study: preset '{cfg.name}' (small scale)", root)
    analysis: dict[str, Any] = {"preset": cfg.name, "points_done": len(rows), "points_total": len(points)}

    doc.paragraph(
        "SMALL-SCALE STUDY. Models of 10^4-10^6 parameters trained for 10^4-10^5 tokens on a generated "
        "demo corpus, with STAND-IN image and audio tokenizers (pooled colour codes; energy x spectral-peak "
        "codes) and a real SentencePiece text tokenizer. The numbers show that the machinery works and how "
        "the trends are read; they are not estimates of the paper's quantities, whose models are 10^4 times "
        "larger.")
    if command:
        doc.paragraph(f"Reproduce with: {command}", note=True)
    wall = sum(float(r.get("wall_s") or 0) for r in rows)
    doc.paragraph(f"{len(rows)} of {len(points)} sweep points done; total training wall time {wall / 60:.1f} min. "
                  f"Losses are held-out ELBO in nats per maskable token on a balanced set (equal rows of "
                  f"text, image-text and audio-text, whatever the training mix), {cfg.eval_repeats} passes with "
                  f"fixed masks; 'text' includes captions and transcripts.")
    if data_info:
        doc.table([{"task": t, "train rows": data_info.get("rows", {}).get(t),
                    "train tokens (non-pad)": data_info.get("tokens", {}).get(t)} for t in data_info.get("rows", {})])
        stand = data_info.get("stand_in", {})
        doc.paragraph(f"Stand-in tokenizers: image {stand.get('image')}, audio {stand.get('audio')}.", note=True)

    # --- per block -----------------------------------------------------------------------
    for block in cfg.blocks:
        brows = [r for r in rows if r["block"] == block.name]
        doc.heading(f"Block '{block.name}'" + (f": {block.note}" if block.note else ""))
        if not brows:
            doc.paragraph("(no finished points)", note=True)
            continue
        table = []
        for r in brows:
            p = by_name[r["name"]]
            table.append({**{k: p.axes[k] for k in p.axes}, "N": int(r["N"] or 0), "D": int(r["D"] or 0),
                          "steps": int(r["steps"] or 0),
                          **{m: r.get(metric) for m, metric in MODALITY_METRICS.items()}})
        doc.table(table)
        doc.figure(block_figure(brows, by_name, block.name),
                   f"{block.name}: final held-out loss per modality")
        labels = {r["name"]: ", ".join(f"{k}={v}" for k, v in by_name[r["name"]].axes.items()) for r in brows}
        doc.figure(curves_figure(curves, [r["name"] for r in brows], labels), f"{block.name}: loss curves")

    # --- scaling law -------------------------------------------------------------------------
    doc.heading("Scaling law L(N, D) = E + A / N^alpha + B / D^beta and the compute-optimal frontier")
    srows = [r for r in rows if r["block"] == cfg.scaling_block]
    fitted = fit_block(srows, cfg.metric, cfg.bootstrap) if srows else {"error": f"no rows in block {cfg.scaling_block}"}
    if "error" in fitted:
        doc.paragraph(f"No fit: {fitted['error']}", note=True)
        analysis["scaling"] = {"error": fitted["error"]}
    else:
        law, boot = fitted["fit"].law, fitted["boot"]
        ci = boot.intervals if boot else {}
        doc.paragraph(f"Huber fit (delta 1e-3) of log-space residuals on {fitted['fit'].n_points} points "
                      f"(block '{cfg.scaling_block}', metric {cfg.metric}); rms log residual "
                      f"{fitted['fit'].rms_log_residual:.4f}. Intervals: {boot.level:.0%} percentile bootstrap over "
                      f"points ({boot.n_ok} refits)." if boot else "No bootstrap (bootstrap = 0).")
        prow = []
        for k in ("E", "A", "B", "alpha", "beta"):
            lo, hi = ci.get(k, (math.nan, math.nan))
            prow.append({"parameter": k, "value": getattr(law, k), "CI low": lo, "CI high": hi})
        lo, hi = ci.get("frontier_exponent", (math.nan, math.nan))
        prow.append({"parameter": "D*(N) exponent alpha/beta", "value": law.frontier_exponent, "CI low": lo, "CI high": hi})
        lo, hi = ci.get("log10_G", (math.nan, math.nan))
        prow.append({"parameter": "D*(N) coefficient G", "value": law.frontier_G, "CI low": 10 ** lo, "CI high": 10 ** hi})
        doc.table(prow)
        doc.paragraph(
            "Frontier: minimising L at fixed compute C = 6ND gives alpha A N^-alpha = beta B D^-beta, so "
            "D*(N) = G N^(alpha/beta) with G = (beta B / (alpha A))^(1/beta); N*(C) ~ C^(beta/(alpha+beta)), "
            "D*(C) ~ C^(alpha/(alpha+beta)). Tokens per parameter at the optimum: G N^(alpha/beta - 1).")
        comp = fitmod.compare_with_paper(law)
        doc.table(comp)
        doc.paragraph(f"Paper: D*(N) ~ 7754 N^0.84 (tokens per parameter ~ 7754 N^-0.16: about 280 at 1B). "
                      f"Autoregressive rule: ~20 tokens per parameter. Ours: D*(N) ~ {law.frontier_G:.3g} "
                      f"N^{law.frontier_exponent:.2f}; extrapolating a fit on 10^4-10^6-parameter models to 10^9 "
                      "is not meaningful at this scale and is shown only to place the numbers side by side.",
                      note=True)
        doc.figure(scaling_figure(fitted["N"], fitted["D"], fitted["L"], law), "sweep points and fitted curves")
        doc.figure(frontier_figure(law, boot, fitted["N"], fitted["D"]), "compute-optimal frontier D*(N)")
        analysis["scaling"] = {**fitted["fit"].as_dict(), "intervals": ci, "level": boot.level if boot else None,
                               "comparison": comp}
        # Per-modality fits (no bootstrap): which modality wants more data per parameter.
        mrows = []
        for mod, metric in list(MODALITY_METRICS.items())[1:]:
            f = fit_block(srows, metric, 0)
            if f and "error" not in f:
                lw = f["fit"].law
                mrows.append({"modality": mod, "E": lw.E, "alpha": lw.alpha, "beta": lw.beta,
                              "D*(N) exponent": lw.frontier_exponent, "G": lw.frontier_G,
                              "tokens/param @1e5": float(lw.tokens_per_param(1e5)),
                              "rms log residual": f["fit"].rms_log_residual})
        if mrows:
            doc.paragraph("Per-modality fits (same points, each modality's held-out loss):")
            doc.table(mrows)
            analysis["scaling_per_modality"] = mrows

    # --- critical batch ----------------------------------------------------------------------
    doc.heading("Critical batch size")
    brows = [r for r in rows if r["block"] == cfg.batch_block]
    if len(brows) < 2:
        doc.paragraph(f"No batch sweep (block '{cfg.batch_block}').", note=True)
    else:
        study = cb.analyse(brows, "batch", "N", "tokens", cfg.metric, cfg.critical_tol)
        doc.paragraph(f"Per (model size N, horizon D): the largest batch whose loss at equal tokens stays within "
                      f"{cfg.critical_tol:.0%} of the best batch; 'crossing' interpolates (log batch) where the loss "
                      "crosses that threshold. Censored: no tested batch degraded.")
        doc.table([r.as_row() for r in study.results])
        compare = []
        for name in cfg.batch_compare_blocks:
            crow = sorted((r for r in rows if r["block"] == name and r.get(cfg.metric) is not None),
                          key=lambda r: r["batch"])
            if crow:
                compare.append((f"{name} (N={crow[0]['N']:.3g}, D={crow[0]['tokens']:.3g})",
                                [r["batch"] for r in crow], [r[cfg.metric] for r in crow]))
        doc.figure(batch_figure(study, "N", "tokens", compare), "loss vs batch at equal tokens")
        if study.size_ratios:
            doc.paragraph("Does it move with model size? Ratio of critical batches (larger / smaller model) at "
                          "each horizon; the paper finds it independent of size (ratio ~ 1).")
            doc.table(study.size_ratios)
        if study.horizon_exponents:
            doc.paragraph("How does it grow with the horizon? Exponent log(Bc2/Bc1)/log(D2/D1); the paper's "
                          "SDE fit has logical batch ~ D^0.44 (sublinear).")
            doc.table(study.horizon_exponents)
        analysis["critical_batch"] = {"groups": [r.as_row() for r in study.results],
                                      "size_ratios": study.size_ratios,
                                      "horizon_exponents": study.horizon_exponents, "tol": cfg.critical_tol}
    (root / "analysis.json").write_text(json.dumps(analysis, indent=1, default=_json_default))
    out = doc.write()
    log.info("report written to %s (and report.md, analysis.json)", out)
    return out


def _json_default(v: Any) -> Any:
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)
