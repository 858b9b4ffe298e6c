"""Public ops with PyTorch names and argument order, and their explicit backward functions.

One module per op family (``conv``, ``pool``, ``activation``, ``linear``, ``loss``, ``norm``,
``rnn``). Each public function validates its arguments, then dispatches through the
registry in :mod:`gpuconv.kernels` (``impl=`` forces an implementation). Arrays in, the same
kind of array out: NumPy, CuPy, or (viewed without a copy) torch and JAX arrays.
"""
import importlib as _importlib

from .activation import *  # noqa: F401,F403
from .conv import *  # noqa: F401,F403
from .linear import *  # noqa: F401,F403
from .loss import *  # noqa: F401,F403
from .norm import *  # noqa: F401,F403
from .pool import *  # noqa: F401,F403
from .rnn import *  # noqa: F401,F403

FAMILIES = ("activation", "conv", "linear", "loss", "norm", "pool", "rnn")
# Looked up by module path: some families export a function named like the module (linear).
__all__ = [name for family in FAMILIES
           for name in _importlib.import_module(f"{__name__}.{family}").__all__]
