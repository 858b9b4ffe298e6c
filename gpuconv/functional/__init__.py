"""Public ops with PyTorch names and argument order, and their explicit backward functions.

One module per op family (``conv``, ``pool``, ``activation``, ``linear``, ``loss``, ``norm``,
``rnn``). Each public function validates its arguments, then dispatches through the
registry in :mod:`gpuconv.kernels` (``impl=`` forces an implementation). Arrays in, the same
kind of array out: NumPy, CuPy, or (viewed without a copy) torch and JAX arrays.
"""
from .activation import *  # noqa: F401,F403
from .conv import *  # noqa: F401,F403
from .linear import *  # noqa: F401,F403
from .loss import *  # noqa: F401,F403
from .norm import *  # noqa: F401,F403
from .pool import *  # noqa: F401,F403
from .rnn import *  # noqa: F401,F403
from . import activation, conv, linear, loss, norm, pool, rnn

__all__ = [n for m in (activation, conv, linear, loss, norm, pool, rnn) for n in m.__all__]
