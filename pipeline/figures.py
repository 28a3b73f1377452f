"""The figure helper: matplotlib on its file-only backend (Agg), and a figure as PNG bytes."""

from __future__ import annotations

import io
from typing import Any


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend: figures go to files, never to a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig: Any, **savefig: Any) -> bytes:
    """``fig`` as PNG bytes (``savefig``: matplotlib's options, e.g. dpi), and the figure closed."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", **savefig)
    pyplot().close(fig)
    return buffer.getvalue()
