"""The A/B report as a page a person reads: the verdict and its rule first, then one table per comparison (arm,
customers, decisions, estimate, CI, Δ, p), the confidence sequence over time, the decision mix and the score
distribution of each segment. Charts are inline PNGs (matplotlib), so the file stands alone (MLflow artifact)."""

from __future__ import annotations

import html
import math

import numpy as np

from analysis.ab_report import LABELS, AbReport, format_delta, format_value
from common.charts import BASE_STYLE, png, pyplot

STYLE = BASE_STYLE + (
    ".verdict{font-size:1.4em;padding:.5em;border-radius:6px;background:#eef}"
    ".breach,.worse{color:#b00}.better,.ok{color:#070}.inconclusive,.undefined{color:#a60}"
)


def _charts(report: AbReport) -> list[str]:
    plt = pyplot()

    out = []
    for c in report.comparisons:
        looks = c.sequential.looks
        if not looks:
            continue
        fig, ax = plt.subplots(figsize=(8, 3.2))
        x = [look.decisions for look in looks]
        ax.plot(x, [look.delta for look in looks], label="Δ approval (all decisions so far)")
        ax.fill_between(
            x,
            [look.cs_low for look in looks],
            [look.cs_high for look in looks],
            alpha=0.2,
            label=f"{report.plan.confidence:.0%} confidence sequence",
        )
        ax.axhline(0, color="black", linewidth=0.8)
        if c.sequential.crossed is not None:
            ax.axvline(c.sequential.crossed.decisions, color="red", linestyle="--", label="first crossing")
        ax.set_xlabel("decisions in both arms (time order)")
        ax.set_title(f"{c.treatment.label} vs {c.control.label}: approval difference over time")
        ax.legend(fontsize=8)
        out.append(png(fig))
    fig, (mix_ax, score_ax) = plt.subplots(1, 2, figsize=(10, 3.2))
    labels = [s.label for s in report.segments]
    bottom = np.zeros(len(labels))
    for decision, colour in (("approve", "#4a4"), ("manual_review", "#da3"), ("deny", "#c44")):
        shares = np.array([s.mix[decision] for s in report.segments])
        mix_ax.bar(labels, shares, bottom=bottom, color=colour, label=decision)
        bottom += shares
    mix_ax.set_title("decision mix per segment")
    mix_ax.legend(fontsize=8)
    for seg in report.segments:
        scores = report.scores.get(seg.label)
        if scores is not None and scores.size:
            score_ax.hist(scores, bins=40, range=(0, 0.5), histtype="step", density=True, label=seg.label)
    score_ax.set_title("score distribution per segment")
    score_ax.legend(fontsize=8)
    out.append(png(fig))
    return out


def render_html(report: AbReport, text: str) -> str:
    esc = html.escape
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>A/B report {esc(report.experiment)}</title>"
        f"<style>{STYLE}</style></head><body><h1>A/B report — {esc(report.experiment)}</h1>",
        f"<p class='verdict'><b>{esc(report.verdict)}</b> — {esc(report.reason)}</p>",
        "<p>Unit of analysis: the customer (arms are assigned per customer). Rates and means are ratios over "
        f"customers with delta-method variances; design effect on the control's approval rate "
        f"{report.design_effect:.2f} ({report.decisions_per_customer:.2f} decisions per customer).</p>",
        "<table><tr><th>segment</th><th>version</th><th>customers</th><th>decisions</th><th>approve</th>"
        "<th>review</th><th>deny</th></tr>",
    ]
    for s in report.segments:
        parts.append(
            f"<tr><td>{esc(s.label)}</td><td>{esc(s.version)}</td><td>{s.customers:,}</td><td>{s.decisions:,}</td>"
            f"<td>{s.mix['approve']:.1%}</td><td>{s.mix['manual_review']:.1%}</td><td>{s.mix['deny']:.1%}</td></tr>"
        )
    parts.append("</table>")
    for c in report.comparisons:
        parts.append(
            f"<h2>{esc(c.treatment.label)} vs {esc(c.control.label)}</h2><table><tr><th>metric</th><th>kind</th>"
            "<th>control</th><th>treatment</th><th>Δ</th><th>CI</th><th>p</th><th>margin</th><th>status</th></tr>"
        )
        for r in c.results:
            d = r.difference
            margin = "—" if r.margin is None else f"{r.margin:g}"
            parts.append(
                f"<tr><td>{esc(LABELS[r.metric])}</td><td>{r.kind}</td><td>{format_value(r.metric, d.control)}</td>"
                f"<td>{format_value(r.metric, d.treatment)}</td><td>{format_delta(r.metric, d.delta)}</td>"
                f"<td>{format_delta(r.metric, d.ci_low)} … {format_delta(r.metric, d.ci_high)}</td>"
                f"<td>{d.p_value:.3g}</td><td>{margin}</td><td class='{r.status.replace(' ', '-')}'>{r.status}</td>"
                "</tr>"
            )
        parts.append("</table>")
        crossed = c.sequential.crossed
        holm = (
            f"Holm-adjusted p of the approval difference {c.success_p_holm:.3g}. "
            if math.isfinite(c.success_p_holm)
            else ""
        )
        seq = (
            f"crossed at {crossed.decisions:,} decisions from {crossed.customers:,} customers "
            f"(Δ {crossed.delta:+.2%}, p {crossed.p_value:.3g})"
            if crossed
            else f"not crossed (always-valid p {c.sequential.p_value:.3g})"
        )
        parts.append(f"<p>{holm}Sequential test: {esc(seq)}.<br><small>{esc(c.sequential.rule)}</small></p>")
    parts += _charts(report)
    parts.append(f"<h2>Terminal report</h2><pre>{esc(text)}</pre></body></html>")
    return "".join(parts)
