"""Build the fused kernels now (``python -m mod_arch_core.models.kernels``); ``make venv`` runs it.

Exits 0 when they are built or ``MOD_ARCH_KERNELS=off``; in ``auto`` mode a failed build is a
warning (the pure-PyTorch path is used), in ``on`` mode an error.
"""

from __future__ import annotations

import sys

from mod_arch_core.models.kernels import kernel_mode, kernels


def main() -> int:
    mode = kernel_mode()
    ext = kernels()
    if ext is None:
        print(f"fused kernels: not built (MOD_ARCH_KERNELS={mode}); the pure-PyTorch path is used")
    else:
        print(f"fused kernels: built ({ext.__file__})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
