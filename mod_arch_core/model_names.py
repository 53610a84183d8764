"""Model names and their option names, without importing torch (spec §3.1, survey-map §A11).

The command line builds its parser from these tuples, so that a typo in a flag is rejected in
milliseconds instead of after the 4-20 s import of torch. :mod:`mod_arch_core.models.registry` is
the source of truth (its ``MODELS`` table maps each name to a routing class); it checks at import
that it agrees with this module, and ``tests/test_bad_inputs.py`` checks it too.
"""

from __future__ import annotations

#: Every buildable model name, in the order of ``models.registry.MODELS``: the paper's four
#: (``validation.PAPER_MODELS``), then the routing variants beyond the paper.
MODEL_NAMES: tuple[str, ...] = (
    "monolithic",
    "modular",
    "modular-op",
    "gt-modular",
    "modular-topk",
    "modular-top2",
    "modular-gumbel",
    "modular-op-topk",
    "modular-balanced",
    "modular-entropy",
    "modular-topk-balanced",
    "modular-gumbel-balanced",
)

_REGULARISERS = ("balance_weight", "entropy_weight")

#: Options ``build_model`` accepts per model name (``ModelSpec.allowed_options``): the routing
#: class's options, then the regularisers of learned routings. Monolithic has none; the oracle
#: routing (``gt-modular``) has no learned router, hence no regulariser.
MODEL_OPTIONS: dict[str, tuple[str, ...]] = {
    "monolithic": (),
    "modular": _REGULARISERS,
    "modular-op": _REGULARISERS,
    "gt-modular": (),
    "modular-topk": ("top_k", *_REGULARISERS),
    "modular-top2": ("top_k", *_REGULARISERS),
    "modular-gumbel": ("tau_start", "tau_end", *_REGULARISERS),
    "modular-op-topk": ("top_k", *_REGULARISERS),
    "modular-balanced": _REGULARISERS,
    "modular-entropy": _REGULARISERS,
    "modular-topk-balanced": ("top_k", *_REGULARISERS),
    "modular-gumbel-balanced": ("tau_start", "tau_end", *_REGULARISERS),
}


def check_option_names(model: str, options: object) -> dict[str, object]:
    """Check that ``options`` is a mapping whose keys are options of ``model``; return it as a dict.

    ``model`` must already be canonical (a name of :data:`MODEL_NAMES`). Values are checked where
    the model is built (``models.build_model``); names are checked here, before torch is imported.
    """
    if not isinstance(options, dict):
        raise TypeError(
            f"model_options of {model!r} must be a mapping option -> value, e.g. {{top_k: 1}}; "
            f"got {options!r}"
        )
    allowed = MODEL_OPTIONS[model]
    unknown = sorted(str(k) for k in options if k not in allowed)
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for model {model!r}; allowed options: "
            f"{', '.join(allowed) or 'none'}"
        )
    return dict(options)
