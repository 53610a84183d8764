"""Figures: one function per figure, drawing package data or tidy results tables.

:mod:`~mod_arch_core.figures.style` holds the single theme and the reproducible writer
(:func:`~mod_arch_core.figures.style.save_figure`); :mod:`~mod_arch_core.figures.definitions`
draws the definition chapters (rules, models, metrics), including the paper's Figure 2
(:func:`~mod_arch_core.figures.definitions.fig2_collapse_example`).
"""

from mod_arch_core.figures.style import (
    MODEL_COLORS,
    MODEL_LABELS,
    MODEL_ORDER,
    figure_bytes,
    figure_style,
    new_figure,
    rule_colors,
    save_figure,
    show,
)

__all__ = [
    "MODEL_COLORS",
    "MODEL_LABELS",
    "MODEL_ORDER",
    "figure_bytes",
    "figure_style",
    "new_figure",
    "rule_colors",
    "save_figure",
    "show",
]
