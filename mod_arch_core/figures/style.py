"""One look for every figure, and figure files whose bytes do not change between runs.

Figures are built with the object-oriented Matplotlib API on a :class:`~matplotlib.figure.Figure`
attached to an Agg canvas: no pyplot state, no interactive backend, identical results headless and
in a notebook. :func:`figure_style` applies the book's single seaborn theme (``darkgrid``,
``notebook`` context, DejaVu Sans, which ships with Matplotlib) as a temporary ``rc_context``, so
importing this package never changes a user's global Matplotlib settings.

:func:`save_figure` writes SVG and PNG with fixed metadata (no date, a fixed creator) and a fixed
``svg.hashsalt``, so re-running a figure function reproduces the same bytes. :func:`show` turns a
figure into an IPython display object for notebooks.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import matplotlib as mpl
import numpy as np
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mod_arch_core.models.registry import MODEL_NAMES
from mod_arch_core.validation import PAPER_MODELS

__all__ = [
    "MODEL_COLORS",
    "MODEL_HATCHES",
    "MODEL_LABELS",
    "MODEL_LINESTYLES",
    "MODEL_MARKERS",
    "MODEL_ORDER",
    "figure_bytes",
    "figure_style",
    "model_color",
    "model_style",
    "new_figure",
    "rule_colors",
    "save_figure",
    "show",
    "theme_rc",
]

#: Order of the models in legends and tables (the paper's figures use this order).
MODEL_ORDER: tuple[str, ...] = (
    "gt-modular",
    "modular-op",
    "modular",
    "monolithic",
    "random",
    # then the routing variants beyond the paper, in the registry's order
    *(m for m in MODEL_NAMES if m not in PAPER_MODELS),
)
#: Display names of the models.
MODEL_LABELS: dict[str, str] = {
    "gt-modular": "GT-Modular",
    "modular-op": "Modular-op",
    "modular": "Modular",
    "monolithic": "Monolithic",
    "random": "Random",
    "modular-topk": "Top-1",
    "modular-top2": "Top-2",
    "modular-gumbel": "Gumbel",
    "modular-op-topk": "Modular-op top-1",
    "modular-balanced": "Balanced",
    "modular-entropy": "Entropy/MI",
    "modular-topk-balanced": "Top-1 + balanced",
    "modular-gumbel-balanced": "Gumbel + balanced",
}
#: Model colours. The paper used four close shades of purple and pink, which readers with a colour
#: vision deficiency (and many without) cannot tell apart. The paper's models take four colours of the
#: Okabe-Ito palette (Okabe and Ito 2008, "Color Universal Design"), which stay distinct under
#: protanopia, deuteranopia and tritanopia; Random is a neutral grey. The routing variants beyond the
#: paper take Paul Tol's "muted" scheme (Tol 2021, "Colour schemes", SRON/EPS/TN/09-002). Colour is
#: never the only cue: every model also has its own marker (:data:`MODEL_MARKERS`), line style
#: (:data:`MODEL_LINESTYLES`) and bar hatch (:data:`MODEL_HATCHES`), so that lines and bars stay
#: apart in grey scale.
MODEL_COLORS: dict[str, str] = {
    "gt-modular": "#0072b2",  # Okabe-Ito blue
    "modular-op": "#e69f00",  # Okabe-Ito orange
    "modular": "#009e73",  # Okabe-Ito bluish green
    "monolithic": "#d55e00",  # Okabe-Ito vermillion
    "random": "#4d4d4d",  # dark grey: apart from the bluish green under deuteranopia
    # routing variants (Tol muted): hard routers cool, regularised soft routers warm
    "modular-topk": "#332288",  # indigo
    "modular-top2": "#88ccee",  # cyan
    "modular-gumbel": "#44aa99",  # teal
    "modular-op-topk": "#999933",  # olive
    "modular-balanced": "#cc6677",  # rose
    "modular-entropy": "#882255",  # wine
    "modular-topk-balanced": "#aa4499",  # purple
    "modular-gumbel-balanced": "#ddcc77",  # sand
}
#: A marker per model (lines and points), so that models stay apart without colour.
MODEL_MARKERS: dict[str, str] = {
    "gt-modular": "o",
    "modular-op": "s",
    "modular": "^",
    "monolithic": "D",
    "random": "x",
    "modular-topk": "v",
    "modular-top2": "<",
    "modular-gumbel": ">",
    "modular-op-topk": "P",
    "modular-balanced": "X",
    "modular-entropy": "*",
    "modular-topk-balanced": "p",
    "modular-gumbel-balanced": "h",
}
#: A line style per model: the paper's four models are solid, dashed, dash-dot and dotted.
MODEL_LINESTYLES: dict[str, Any] = {
    "gt-modular": "-",
    "modular-op": "--",
    "modular": "-.",
    "monolithic": ":",
    "random": (0, (1, 1)),
    "modular-topk": (0, (5, 1)),
    "modular-top2": (0, (3, 1, 1, 1)),
    "modular-gumbel": (0, (3, 1, 1, 1, 1, 1)),
    "modular-op-topk": (0, (7, 2, 2, 2)),
    "modular-balanced": (0, (2, 2)),
    "modular-entropy": (0, (6, 3)),
    "modular-topk-balanced": (0, (1, 2, 4, 2)),
    "modular-gumbel-balanced": (0, (4, 1, 1, 1, 1, 1, 1, 1)),
}
#: A hatch per model for bars and pie wedges (empty: plain fill).
MODEL_HATCHES: dict[str, str] = {
    "gt-modular": "",
    "modular-op": "//",
    "modular": "..",
    "monolithic": "\\\\",
    "random": "xx",
    "modular-topk": "--",
    "modular-top2": "||",
    "modular-gumbel": "++",
    "modular-op-topk": "oo",
    "modular-balanced": "OO",
    "modular-entropy": "**",
    "modular-topk-balanced": "-|",
    "modular-gumbel-balanced": "/.",
}
#: Metadata written into every file: no creation date, so the bytes are reproducible.
SVG_METADATA: dict[str, Any] = {"Date": None, "Creator": "mod_arch_core.figures"}
PNG_METADATA: dict[str, Any] = {"Software": None}
_PDF_METADATA: dict[str, Any] = {"CreationDate": None, "Creator": "mod_arch_core.figures"}
#: Resolution of the PNG copies.
PNG_DPI = 150


def theme_rc() -> dict[str, Any]:
    """The rcParams of the book's theme: seaborn ``darkgrid`` + ``notebook``, fixed fonts and ids."""
    rc: dict[str, Any] = {}
    rc.update(sns.axes_style("darkgrid"))
    rc.update(sns.plotting_context("notebook"))
    rc.update(
        {
            "font.family": ["sans-serif"],
            "font.sans-serif": ["DejaVu Sans"],  # ships with Matplotlib: same glyphs everywhere
            "svg.fonttype": "path",  # text as paths: no dependency on the reader's fonts
            "svg.hashsalt": "mod_arch_core",  # deterministic element ids in SVG files
            "figure.dpi": 100,
            "savefig.dpi": PNG_DPI,
            "savefig.bbox": "tight",
            "savefig.facecolor": "white",
            "axes.titlesize": 12,
            "axes.labelsize": 11,
            "legend.frameon": False,
        }
    )
    return rc


@contextlib.contextmanager
def figure_style() -> Iterator[None]:
    """Apply :func:`theme_rc` for the duration of a ``with`` block (global settings untouched)."""
    with mpl.rc_context(theme_rc()):
        yield


def new_figure(
    nrows: int = 1,
    ncols: int = 1,
    *,
    figsize: tuple[float, float] = (6.4, 4.0),
    **subplots_kw: Any,
) -> tuple[Figure, Any]:
    """A figure on an Agg canvas and its axes (``Figure.subplots``); call inside :func:`figure_style`."""
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=True, **subplots_kw)
    return fig, axes


def rule_colors(num_rules: int) -> list[str]:
    """One distinct, colour-blind friendly colour per rule (``husl`` beyond ten rules)."""
    palette = "colorblind" if num_rules <= 10 else "husl"
    return [mpl.colors.to_hex(c) for c in sns.color_palette(palette, num_rules)]


def model_color(model: str) -> str:
    """The colour of a model (:data:`MODEL_COLORS`); raises ``ValueError`` for unknown names."""
    key = model.strip().lower().replace("_", "-")
    if key not in MODEL_COLORS:
        raise ValueError(f"unknown model {model!r}; allowed: {', '.join(MODEL_COLORS)}")
    return MODEL_COLORS[key]


def model_style(model: str) -> dict[str, Any]:
    """Line keywords of a model: ``color``, ``marker``, ``linestyle`` (grey-scale safe).

    Unknown names (a model added to the registry without a style) get a dark grey solid line
    with a plain circle, so a new variant still plots.
    """
    key = model.strip().lower().replace("_", "-")
    return {
        "color": MODEL_COLORS.get(key, "#444444"),
        "marker": MODEL_MARKERS.get(key, "o"),
        "linestyle": MODEL_LINESTYLES.get(key, "-"),
    }


def save_figure(
    fig: Figure,
    path: str | os.PathLike[str],
    formats: Sequence[str] = ("svg", "png"),
) -> list[Path]:
    """Write ``fig`` as SVG and PNG next to each other, with reproducible bytes.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
    path : path
        Target file; its suffix is replaced by each format (``figures/fig2.svg`` writes
        ``figures/fig2.svg`` and ``figures/fig2.png``). Parent folders are created.
    formats : sequence of {"svg", "png", "pdf"}

    Returns
    -------
    list of Path
        The files written, in the order of ``formats``.
    """
    base = Path(path)
    base.parent.mkdir(parents=True, exist_ok=True)
    written = []
    with figure_style():
        for fmt in formats:
            if fmt not in {"svg", "png", "pdf"}:
                raise ValueError(f"format must be one of svg, png, pdf; got {fmt!r}")
            target = base.with_suffix(f".{fmt}")
            metadata = {"svg": SVG_METADATA, "png": PNG_METADATA, "pdf": _PDF_METADATA}[fmt]
            fig.savefig(target, format=fmt, metadata=metadata)
            written.append(target)
    return written


def figure_bytes(fig: Figure, fmt: str = "svg") -> bytes:
    """The bytes :func:`save_figure` would write for ``fmt``, without touching the disk."""
    buffer = io.BytesIO()
    metadata = {"svg": SVG_METADATA, "png": PNG_METADATA, "pdf": _PDF_METADATA}[fmt]
    with figure_style():
        fig.savefig(buffer, format=fmt, metadata=metadata)
    return buffer.getvalue()


def show(fig: Figure, fmt: str = "svg") -> Any:
    """An IPython display object for ``fig`` (SVG by default), for the last line of a cell.

    Works whatever Matplotlib backend the kernel uses, because it renders the bytes itself.
    """
    from IPython.display import SVG, Image

    data = figure_bytes(fig, fmt)
    return SVG(data) if fmt == "svg" else Image(data, format=fmt)


def symmetric_limits(values: np.ndarray, quantile: float = 0.99) -> float:
    """A symmetric colour limit covering ``quantile`` of ``|values|`` (at least 1e-12)."""
    return float(max(np.quantile(np.abs(np.asarray(values)), quantile), 1e-12))
