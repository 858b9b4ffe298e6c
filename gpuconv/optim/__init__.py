"""Optimizers, gradient clipping and learning-rate schedules, named as in ``torch.optim``.

Parameters are objects with ``.data`` (a NumPy or CuPy float array, updated in place) and
``.grad`` (same shape, or None to skip the parameter). Every optimizer also takes a
keyword-only ``l1`` that adds ``l1 * sign(w)`` to the gradient (an L1 penalty on the weights).
On CuPy arrays one step is one fused kernel launch per dtype for all the parameters
(``kernels/optim.cu``), and ``clip_grad_norm_`` keeps the norm on the device: neither makes
the host wait.

    opt = gpuconv.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = gpuconv.optim.lr_scheduler.StepLR(opt, step_size=10)
    for epoch in ...:
        ... backward ...
        gpuconv.optim.clip_grad_norm_(model.parameters(), 5.0)
        opt.step(); opt.zero_grad()
        sched.step()
    np.savez(path, **opt.state_arrays("optim."))
"""
from __future__ import annotations

from . import lr_scheduler
from .adadelta import Adadelta
from .adagrad import Adagrad
from .adam import Adam, AdamW
from .clip import clip_grad_norm_
from .optimizer import Optimizer
from .rmsprop import RMSprop
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "Adagrad", "Adadelta", "RMSprop", "Adam", "AdamW",
           "clip_grad_norm_", "lr_scheduler"]
