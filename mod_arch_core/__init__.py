"""mod_arch_core: the definitions of "Is a Modular Architecture Enough?" as a library.

Mittal, Bengio, Lajoie (NeurIPS 2022, arXiv 2206.02713). The package follows the data
flow of the study: rule data (:mod:`mod_arch_core.data`) -> models
(:mod:`mod_arch_core.models`) -> metrics (:mod:`mod_arch_core.metrics`).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
