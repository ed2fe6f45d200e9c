"""Report pages that stand alone (MLflow artifacts, files to mail): one stylesheet, charts as inline PNGs."""

from __future__ import annotations

import base64
import io
from typing import Any, Final

#: Tables and text of every HTML report; a report appends its own classes.
BASE_STYLE: Final = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
    "th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}"
)


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend (imported on first use: it costs a second)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png(fig: Any) -> str:
    """A matplotlib figure as an inline ``<img>`` (the figure is closed)."""
    plt = pyplot()
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return f"<img src='data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}'>"
