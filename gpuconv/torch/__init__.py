"""gpuconv's ops inside PyTorch models: custom operators with autograd and torch.compile.

Every public op of :mod:`gpuconv.functional` that has a backward is registered with
``torch.library.custom_op`` as ``torch.ops.gpuconv.<name>``, together with its backward
(``torch.ops.gpuconv.<name>_backward``), a fake (meta) implementation for tracing, and an
autograd formula that calls gpuconv's own explicit backward with what the forward saved
(pooling indices, the recurrent reserve, a softmax's result), so ``torch.compile(model,
fullgraph=True)`` traces a model built from them without a graph break.

The functions here have ``torch.nn.functional``'s names and signatures (``conv2d(input,
weight, bias, stride, padding, dilation, groups)``, ``max_pool2d``, ``batch_norm``,
``cross_entropy``, ...; the recurrent ones, which torch.nn.functional lacks, follow
:mod:`gpuconv.functional`), and :mod:`gpuconv.torch.nn` has the modules. Tensors are shared
with gpuconv without copies: CPU tensors as NumPy arrays, CUDA tensors as CuPy arrays through
DLPack, computed on PyTorch's current CUDA stream.

Importing this module imports torch; ``import gpuconv`` never does.
"""
from . import nn
from ._activation import *  # noqa: F401,F403
from ._activation import __all__ as _activation_all
from ._conv import *  # noqa: F401,F403
from ._conv import __all__ as _conv_all
from ._linear import *  # noqa: F401,F403
from ._linear import __all__ as _linear_all
from ._loss import *  # noqa: F401,F403
from ._loss import __all__ as _loss_all
from ._norm import *  # noqa: F401,F403
from ._norm import __all__ as _norm_all
from ._pool import *  # noqa: F401,F403
from ._pool import __all__ as _pool_all
from ._rnn import *  # noqa: F401,F403
from ._rnn import __all__ as _rnn_all

__all__ = ["nn", *_activation_all, *_conv_all, *_linear_all, *_loss_all, *_norm_all,
           *_pool_all, *_rnn_all]
