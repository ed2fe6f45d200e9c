"""The performance report as a page: what was measured on which loans, the per-version table (realized beside
estimated), the alerts, then ROC, calibration and vintage charts (inline PNGs, so the file stands alone as an MLflow
artifact)."""

from __future__ import annotations

import html
import math
from typing import Any

from common.charts import BASE_STYLE, png, pyplot
from performance.analysis import PerformanceReport
from schemas.alerts import Alert

STYLE = BASE_STYLE + (".alert{color:#b00}.note{color:#555}")


def _charts(report: PerformanceReport) -> list[str]:
    plt = pyplot()

    out = []
    fig, (roc, cal) = plt.subplots(1, 2, figsize=(11, 4.2))
    for v in report.versions:
        if v.roc[0]:
            roc.plot(v.roc[0], v.roc[1], label=f"v{v.version} ({v.alias}) AUC {v.auc.value:.3f}")
        if v.calibration is not None:
            expected = [b.expected / b.loans for b in v.calibration.bands if b.loans]
            observed = [b.observed / b.loans for b in v.calibration.bands if b.loans]
            cal.plot(expected, observed, marker="o", label=f"v{v.version}")
    roc.plot([0, 1], [0, 1], color="grey", linewidth=0.8)
    roc.set_xlabel("false-positive rate (good loans flagged)")
    roc.set_ylabel("true-positive rate (bad loans caught)")
    roc.set_title("ROC, funded loans of the matured cohort")
    roc.legend(fontsize=8)
    top = max([0.01] + [b.expected / b.loans for v in report.versions if v.calibration for b in v.calibration.bands])
    cal.plot([0, top], [0, top], color="grey", linewidth=0.8)
    cal.set_xlabel("predicted default rate (score decile)")
    cal.set_ylabel("observed default rate")
    cal.set_title("calibration by score decile")
    cal.legend(fontsize=8)
    out.append(png(fig))
    deciding = [v for v in report.versions if v.vintages]
    if deciding:
        fig, axes = plt.subplots(1, len(deciding), figsize=(5.5 * len(deciding), 3.8), squeeze=False)
        for ax, v in zip(axes[0], deciding, strict=True):
            for vintage in v.vintages[-8:]:
                points = [(w + 1, x) for w, x in enumerate(vintage.cumulative) if not math.isnan(x)]
                if points:
                    ax.plot(*zip(*points, strict=True), marker=".", label=f"{vintage.cohort} ({vintage.loans:,})")
            ax.set_xlabel("weeks on book")
            ax.set_ylabel("cumulative default rate")
            ax.set_title(f"vintages, loans v{v.version} decided")
            ax.legend(fontsize=7)
        out.append(png(fig))
    return out


def _pct(x: float) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.2%}"


def _num(x: float | None, digits: int = 3) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _oe(c: Any) -> str:
    if c is None:
        return "—"
    b = c.overall
    return f"{_num(b.ratio, 2)} ({_num(b.ratio_low, 2)}–{_num(b.ratio_high, 2)})"


def render_html(report: PerformanceReport, alerts: list[Alert], charts: bool = True) -> str:
    w = report.windows
    e = html.escape
    parts = [
        f"<html><head><meta charset='utf-8'><title>performance {w.analysis_date}</title><style>{STYLE}</style>"
        "</head><body>",
        f"<h1>Model performance — {e(w.cadence)} analysis of {w.analysis_date}</h1>",
        f"<p>Matured cohort: decisions of {w.cohort_start:%Y-%m-%d} – {w.cohort_end:%Y-%m-%d} (outcomes known); "
        f"estimates: decisions of {w.fresh_start:%Y-%m-%d} – {w.fresh_end:%Y-%m-%d} (no outcomes yet).</p>",
        f"<p class='note'>Measured on {e(report.population)}. {report.decisions:,} decisions, {report.funded:,} "
        f"funded ({report.reviews_funded:,} after manual review), {report.labelled:,} with an outcome; "
        f"{report.approved_without_outcome:,} approved loans have no outcome yet. Figures on funded loans "
        "describe the approved range only: AUC there is lower than over all applicants.</p>",
        "<h2>Alerts</h2>",
        "<ul>"
        + ("".join(f"<li class='alert'>{e(a.severity)}: {e(a.message)}</li>" for a in alerts) or "<li>none</li>")
        + "</ul>",
        "<h2>Per version (matured cohort)</h2><table><tr><th>version</th><th>loans</th><th>defaults</th>"
        "<th>AUC (95% CI)</th><th>vs champion</th><th>Gini</th><th>KS</th><th>Brier</th><th>observed/expected</th>"
        "<th>CITL</th><th>HL p</th><th>AUC approved / holdout</th><th>default among approved: realized</th>"
        "<th>estimated</th><th>gap</th></tr>",
    ]
    for v in report.versions:
        c = v.calibration
        vs = v.vs_champion
        parts.append(
            f"<tr><td>v{e(v.version)} ({e(v.alias)})</td><td>{v.loans:,}</td><td>{v.bads:,}</td>"
            f"<td>{_num(v.auc.value)} ({_num(v.auc.low)}–{_num(v.auc.high)})</td>"
            f"<td>{'—' if vs is None else f'{vs.delta:+.3f} (p {vs.p_value:.3g})'}</td>"
            f"<td>{_num(v.gini)}</td><td>{_num(v.ks)}</td><td>{_num(v.brier, 4)}</td>"
            f"<td>{_oe(c)}</td>"
            f"<td>{'—' if c is None else f'{c.citl:+.4f}'}</td><td>{'—' if c is None else f'{c.hl_p_value:.3g}'}</td>"
            f"<td>{_num(v.auc_approved.value)} / {_num(v.holdout_auc_approved)}</td>"
            f"<td>{_pct(v.default_approved.value)} "
            f"({_pct(v.default_approved.low)}–{_pct(v.default_approved.high)})</td>"
            f"<td>{_pct(v.estimated_matured.default_rate)} ({_pct(v.estimated_matured.default_rate_low)}–"
            f"{_pct(v.estimated_matured.default_rate_high)})</td><td>{_pct(v.gap)}</td></tr>"
        )
    parts.append(
        "</table><h2>Per arm</h2><table><tr><th>arm</th><th>versions</th><th>decisions</th>"
        "<th>approval rate</th><th>default among approved</th></tr>"
    )
    for arm in report.arms:
        parts.append(
            f"<tr><td>{e(arm.arm)}</td><td>{e(', '.join(arm.versions))}</td><td>{arm.decisions:,}</td>"
            f"<td>{_pct(arm.approval_rate.value)}</td><td>{_pct(arm.default_approved.value)} "
            f"({_pct(arm.default_approved.low)}–{_pct(arm.default_approved.high)})</td></tr>"
        )
    parts.append(
        "</table><h2>Observed vs expected by income bracket (deciding model)</h2><table>"
        "<tr><th>income</th><th>loans</th><th>observed</th><th>expected</th><th>O/E</th></tr>"
    )
    for bracket, (n, observed, expected) in report.segments.items():
        ratio = observed / expected if expected else math.nan
        parts.append(
            f"<tr><td>{e(bracket)}</td><td>{n:,}</td><td>{observed:.0f}</td><td>{expected:.1f}</td>"
            f"<td>{_num(ratio, 2)}</td></tr>"
        )
    parts.append(
        "</table><h2>Fairness: approvals by age bracket (last period) and defaults among approved (matured)</h2>"
        "<table><tr><th>version</th><th>age bracket</th><th>decisions</th><th>approval rate</th>"
        "<th>adverse impact ratio</th><th>default among approved</th></tr>"
    )
    for fair in report.fairness:
        for b in sorted(fair.brackets, key=lambda b: b.bracket):
            parts.append(
                f"<tr><td>v{e(fair.version)}</td><td>{e(b.bracket)}</td><td>{b.decisions:,}</td>"
                f"<td>{_pct(b.approval.value)}</td><td>{_num(b.impact_ratio, 2)}</td>"
                f"<td>{_pct(b.default_approved.value)}</td></tr>"
            )
    parts.append(
        "</table><h2>Estimated, fresh decisions (no outcomes yet)</h2><table><tr><th>version</th>"
        "<th>approved</th><th>expected default rate</th><th>expected AUC</th></tr>"
    )
    for v in report.versions:
        f = v.estimated_fresh
        parts.append(
            f"<tr><td>v{e(v.version)}</td><td>{f.loans:,}</td><td>{_pct(f.default_rate)} "
            f"({_pct(f.default_rate_low)}–{_pct(f.default_rate_high)})</td><td>{_num(f.auc)}</td></tr>"
        )
    parts.append("</table>")
    if charts:
        parts += _charts(report)
    parts.append("</body></html>")
    return "\n".join(parts)
