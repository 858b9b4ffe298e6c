"""Module, Parameter and the containers, with explicit forward and backward.

There is no autograd tape: a module's ``forward`` keeps what its ``backward`` needs on the
module itself, and ``backward(grad_output)`` returns the gradient with respect to the
forward's input and ADDS the gradient of each parameter into ``param.grad`` (setting it when
it is None), as torch's ``.backward()`` accumulates. Call ``zero_grad()`` between steps.
Each module remembers only its latest forward, so a module used twice in one forward pass
(weight sharing by reusing the object) is not supported; create two modules instead.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Iterable, Iterator, NamedTuple

import numpy as np

from .. import backend

__all__ = ["Parameter", "Module", "Sequential", "ModuleList", "Identity", "accumulate_grad"]


class Parameter:
    """A trainable array: ``data`` (NumPy or CuPy) and its gradient ``grad`` (None until a
    backward runs). Optimizers update ``data`` in place and read ``grad``."""

    __slots__ = ("data", "grad")

    def __init__(self, data: Any):
        if not (hasattr(data, "shape") and hasattr(data, "dtype")):
            raise TypeError(f"Parameter: data must be an array, got {type(data).__name__}")
        self.data = data
        self.grad = None

    @property
    def shape(self) -> tuple:
        return tuple(self.data.shape)

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def size(self) -> int:
        return int(self.data.size)

    def __repr__(self) -> str:
        return (f"Parameter(shape={self.shape}, dtype={self.dtype}, "
                f"device={backend.device_of(self.data)})")


# Arrays that take a parameter's first gradient of a step in place of a new copy, by
# id(param): set only in a data-parallel worker process (route_gradients), whose gradients
# then land in the shared block that the caller reads without a second copy.
_gradient_buffers: dict[int, Any] = {}


def route_gradients(params: Iterable[Parameter], buffers: Iterable[Any]) -> None:
    """From now on in this process, the first gradient of each of ``params`` is copied into
    its array of ``buffers`` (same shape and dtype), which becomes its ``.grad``."""
    _gradient_buffers.update((id(p), b) for p, b in zip(params, buffers))


def accumulate_grad(param: Parameter, grad: Any) -> None:
    """``param.grad += grad``, or ``param.grad = `` a copy of ``grad`` when it is None (a
    copy, so that later accumulation never writes into an array the caller still holds;
    into the parameter's buffer of :func:`route_gradients` when it has one that fits)."""
    if param.grad is None:
        buffer = _gradient_buffers.get(id(param))
        if buffer is None or buffer.shape != grad.shape or buffer.dtype != grad.dtype:
            param.grad = grad.copy()
        else:
            np.copyto(buffer, grad)
            param.grad = buffer
    else:
        param.grad += grad


class _IncompatibleKeys(NamedTuple):
    missing_keys: list
    unexpected_keys: list


class Module:
    """Base class of every layer, loss and model.

    Subclasses call ``super().__init__()`` first, then assign Parameters and Modules as
    attributes (registered in that order, which is the order of ``parameters()`` and of the
    ``state_dict`` keys, as in torch) and arrays through ``register_buffer``. They implement
    ``forward`` (saving what backward needs with ``self._save(...)``) and ``backward``.
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_ctx", None)

    # ------------------------------------------------------------------ registration

    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}: call super().__init__() before "
                                 "assigning attributes")
        if isinstance(value, Parameter):
            self._unregister(name)
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._unregister(name)
            self._modules[name] = value
        elif name in self._parameters:
            if value is not None:
                raise TypeError(f"{type(self).__name__}.{name} is a parameter: assign a "
                                f"Parameter or None, not {type(value).__name__}")
            self._parameters[name] = None
        elif name in self._buffers:
            self._buffers[name] = value
        elif name in self._modules:
            if value is not None:
                raise TypeError(f"{type(self).__name__}.{name} is a submodule: assign a "
                                f"Module or None, not {type(value).__name__}")
            self._modules[name] = None
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        # Called only when normal lookup fails, i.e. for registered names.
        for registry in ("_parameters", "_buffers", "_modules"):
            table = self.__dict__.get(registry)
            if table is not None and name in table:
                return table[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name: str) -> None:
        if not self._unregister(name):
            object.__delattr__(self, name)

    def _unregister(self, name: str) -> bool:
        found = False
        for table in (self._parameters, self._buffers, self._modules):
            if name in table:
                del table[name]
                found = True
        self.__dict__.pop(name, None)
        return found

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Register ``param`` (or None, for an absent optional parameter such as bias=False)."""
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"register_parameter: {name} must be a Parameter or None, "
                            f"got {type(param).__name__}")
        self._unregister(name)
        self._parameters[name] = param

    def register_buffer(self, name: str, array: Any) -> None:
        """Register a non-trainable array that belongs to the state (running statistics)."""
        self._unregister(name)
        self._buffers[name] = array

    def add_module(self, name: str, module: Module | None) -> None:
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"add_module: {name} must be a Module, got {type(module).__name__}")
        self._unregister(name)
        self._modules[name] = module

    def _add_children(self, modules: tuple) -> None:
        """Register ``modules`` as "0", "1", ..., or, when the one argument is an
        OrderedDict, under its names (the constructors of Sequential and Concat)."""
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for name, m in modules[0].items():
                self.add_module(name, m)
        else:
            for i, m in enumerate(modules):
                self.add_module(str(i), m)

    # ------------------------------------------------------------------ traversal

    def named_children(self) -> Iterator[tuple[str, Module]]:
        for name, m in self._modules.items():
            if m is not None:
                yield name, m

    def children(self) -> Iterator[Module]:
        for _, m in self.named_children():
            yield m

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """This module and every descendant, depth first in registration order, once each."""
        seen: set[int] = set()

        def walk(module: Module, name: str):
            if id(module) in seen:
                return
            seen.add(id(module))
            yield name, module
            for child_name, child in module.named_children():
                yield from walk(child, f"{name}.{child_name}" if name else child_name)

        yield from walk(self, prefix)

    def modules(self) -> Iterator[Module]:
        for _, m in self.named_modules():
            yield m

    def _named_members(self, table: str, prefix: str, recurse: bool):
        seen: set[int] = set()
        modules = self.named_modules(prefix) if recurse else [(prefix, self)]
        for module_name, module in modules:
            for name, value in getattr(module, table).items():
                if value is None or id(value) in seen:
                    continue
                seen.add(id(value))
                yield (f"{module_name}.{name}" if module_name else name), value

    def named_parameters(self, prefix: str = "",
                         recurse: bool = True) -> Iterator[tuple[str, Parameter]]:
        """(dotted name, Parameter) pairs in torch's order; a shared Parameter appears once."""
        return self._named_members("_parameters", prefix, recurse)

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix: str = "", recurse: bool = True) -> Iterator[tuple[str, Any]]:
        return self._named_members("_buffers", prefix, recurse)

    def buffers(self, recurse: bool = True) -> Iterator[Any]:
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def apply(self, fn: Callable[[Module], None]) -> Module:
        """Call ``fn`` on every submodule and then on this module (custom initialisation)."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    # ------------------------------------------------------------------ modes and state

    def train(self, mode: bool = True) -> Module:
        """Set the ``training`` flag here and in every descendant (Dropout, BatchNorm read it)."""
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self) -> Module:
        return self.train(False)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset every parameter's ``grad``: to None (default, as torch), or to zeros."""
        for p in self.parameters():
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad[...] = 0

    def state_dict(self, prefix: str = "") -> OrderedDict:
        """Every parameter and buffer under torch's dotted names (``features.0.weight``,
        ``bn1.running_mean``, ``bn1.num_batches_tracked``), parameters before buffers within a
        module, modules in registration order.

        The values are the live arrays, as in torch: copy them to keep a snapshot that later
        training steps do not change.
        """
        out: OrderedDict = OrderedDict()
        self._collect_state(out, prefix)
        return out

    def _collect_state(self, out: OrderedDict, prefix: str) -> None:
        for name, p in self._parameters.items():
            if p is not None:
                out[prefix + name] = p.data
        for name, b in self._buffers.items():
            if b is not None:
                out[prefix + name] = b
        for name, m in self.named_children():
            m._collect_state(out, f"{prefix}{name}.")

    def load_state_dict(self, state_dict: dict, strict: bool = True) -> _IncompatibleKeys:
        """Copy arrays from ``state_dict`` into this module's parameters and buffers in place.

        Values may be NumPy, CuPy, or any array with ``__dlpack__`` (a CPU torch state dict
        loads as it is); they are cast to each target's dtype and device. A shape mismatch is
        always a ValueError; with ``strict`` so are missing and unexpected keys. Returns
        ``(missing_keys, unexpected_keys)``.
        """
        own = self.state_dict()
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        values = {k: backend.import_array(v)[0] for k, v in state_dict.items() if k in own}
        mismatched = [f"{k}: expected {tuple(own[k].shape)}, got {tuple(v.shape)}"
                      for k, v in values.items() if tuple(v.shape) != tuple(own[k].shape)]
        problems = []
        if mismatched:
            problems.append("shape mismatch for " + "; ".join(mismatched))
        if strict and missing:
            problems.append("missing keys " + ", ".join(missing))
        if strict and unexpected:
            problems.append("unexpected keys " + ", ".join(unexpected))
        if problems:
            raise ValueError(f"load_state_dict into {type(self).__name__}: " + "; ".join(problems))
        for k, v in values.items():
            target = own[k]
            target[...] = backend.to_device(v, backend.device_of(target)).astype(target.dtype)
        return _IncompatibleKeys(missing, unexpected)

    def to(self, device: str | None = None, dtype: Any = None) -> Module:
        """Move every parameter (with its grad) and buffer to ``device`` ("cpu", "cuda" or
        "auto", see :func:`gpuconv.backend.resolve_device`) and/or cast the floating ones to
        ``dtype``. Works in place and returns self."""
        device = None if device is None else backend.resolve_device(device)

        def convert(a):
            if a is None:
                return None
            if device is not None:
                a = backend.to_device(a, device)
            if dtype is not None and np.issubdtype(np.dtype(a.dtype), np.floating):
                a = a.astype(dtype, copy=False)
            return a

        for m in self.modules():
            for p in m._parameters.values():
                if p is not None:
                    p.data, p.grad = convert(p.data), convert(p.grad)
            for name in m._buffers:
                m._buffers[name] = convert(m._buffers[name])
        return self

    # ------------------------------------------------------------------ forward / backward

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def backward(self, grad_output):
        raise NotImplementedError(f"{type(self).__name__} does not implement backward")

    def backward_params(self, grad_output) -> None:
        """``backward`` for an input that needs no gradient (a network's data, as a torch
        tensor with ``requires_grad=False``): each parameter's gradient is added into
        ``.grad`` as by ``backward``, and the gradient with respect to the input is skipped
        where the module can skip it (a convolution's grad_input, a large part of a first
        layer's backward). Returns None. This version runs ``backward`` and drops its result."""
        self.backward(grad_output)

    # Whether the forward and backward in the current mode treat the samples along the
    # input's axis 0 separately: each sample's output and parameter gradients depend on that
    # sample alone, so a batch cut into shards gives the batch's output, and its parameter
    # gradients as the shards' sum (fit's data-parallel step, gpuconv.data_parallel). False
    # unless a layer declares it: a layer that mixes samples (batch statistics, a mask drawn
    # per call) must not be sharded.
    samples_independent = False

    def _save(self, *values) -> None:
        """Keep what backward needs from the latest forward."""
        object.__setattr__(self, "_ctx", values)

    def _saved(self) -> tuple:
        """What the latest forward saved; a clear error when forward has not run."""
        if self._ctx is None:
            raise RuntimeError(f"{type(self).__name__}.backward was called before forward: "
                               "run forward first, backward uses what forward saves")
        return self._ctx

    # ------------------------------------------------------------------ printing

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"({name}): " + repr(m).replace("\n", "\n  ") for name, m in self.named_children()]
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not lines:
            return head + ")"
        return head + "\n  " + "\n  ".join(lines) + "\n)"


# What a module computes with: a subclass that redefines one of these below the class that
# declared samples_independent may mix samples, and must declare it again to be trusted.
_COMPUTING = ("forward", "backward", "backward_params", "forward_fused", "fused_activation",
              "takes_backward_of", "backward_through", "_grad_input", "_args", "mean_divisor")


def declared_by_its_code(module: Module) -> bool:
    """Whether ``module``'s class computes with the code that declared its
    ``samples_independent``: every method of ``_COMPUTING`` comes from that class, a class
    above it, or gpuconv itself (a user's subclass of ``Linear`` with its own ``forward``
    does not inherit ``Linear``'s word)."""
    cls = type(module)
    declaring = next(c for c in cls.__mro__ if "samples_independent" in c.__dict__)
    for name in _COMPUTING:
        owner = next((c for c in cls.__mro__ if name in c.__dict__), None)
        if owner is not None and owner not in declaring.__mro__ \
                and not owner.__module__.startswith("gpuconv."):
            return False
    return True


def independent(module: Module) -> bool:
    """``module.samples_independent``, trusted only as declared by its code."""
    return declared_by_its_code(module) and module.samples_independent


def _children_independent(module: Module) -> bool:
    """A container's ``samples_independent``: every child's (as declared by its code)."""
    return all(independent(m) for m in module.children())


class Sequential(Module):
    """Modules applied in order; backward runs their backward in reverse order.

    ``Sequential(m0, m1, ...)`` names the children "0", "1", ...; ``Sequential(OrderedDict)``
    uses the dict's names.
    """

    def __init__(self, *modules: Module | OrderedDict):
        super().__init__()
        self._add_children(modules)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def __getitem__(self, index: int | slice):
        items = list(self._modules.items())
        if isinstance(index, slice):
            return Sequential(OrderedDict(items[index]))
        return items[index][1]

    def append(self, module: Module) -> Sequential:
        self.add_module(str(len(self)), module)
        return self

    @property
    def samples_independent(self) -> bool:
        return _children_independent(self)

    def forward(self, input):
        modules = list(self)
        i = 0
        while i < len(modules):
            m, after = modules[i], modules[i + 1] if i + 1 < len(modules) else None
            # A convolution and the activation after it, fused where the layer says it can.
            fused = m.fused_activation(after, input) if (
                after is not None and hasattr(m, "fused_activation")) else None
            if fused is not None:
                input = m.forward_fused(input, after, fused)
                i += 2
            else:
                input = m(input)
                i += 1
        return input

    def backward(self, grad_output):
        return _backward_chain(list(self), grad_output)

    def backward_params(self, grad_output) -> None:
        """As ``backward``, without the input's gradient: the first module that holds
        parameters runs its ``backward_params``, and the modules before it (which have none,
        so their backward would only carry the input's gradient) do not run."""
        modules = list(self)
        first = next((i for i, m in enumerate(modules)
                      if next(m.parameters(), None) is not None), None)
        if first is None:
            return
        modules[first].backward_params(_backward_chain(modules[first + 1:], grad_output))


def _backward_chain(modules: list, grad_output):
    """``grad_output`` through the backward of ``modules``, last to first; a module whose
    ``takes_backward_of`` accepts the module before it runs both backwards as one (a max
    pooling after a ReLU: :meth:`gpuconv.nn.MaxPool2d.backward_through`)."""
    i = len(modules) - 1
    while i >= 0:
        m, before = modules[i], modules[i - 1] if i > 0 else None
        takes = getattr(m, "takes_backward_of", None)
        if before is not None and takes is not None and takes(before):
            grad_output = m.backward_through(grad_output, before)
            i -= 2
        else:
            grad_output = m.backward(grad_output)
            i -= 1
    return grad_output


class ModuleList(Module):
    """A list of modules that registers them (names "0", "1", ...); it has no forward."""

    @property
    def samples_independent(self) -> bool:
        return _children_independent(self)

    def __init__(self, modules: Iterable[Module] | None = None):
        super().__init__()
        for m in modules or ():
            self.append(m)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def __getitem__(self, index: int) -> Module:
        return list(self._modules.values())[index]

    def append(self, module: Module) -> ModuleList:
        self.add_module(str(len(self)), module)
        return self

    def extend(self, modules: Iterable[Module]) -> ModuleList:
        for m in modules:
            self.append(m)
        return self


class Identity(Module):
    """Returns its input; backward returns its grad_output."""

    samples_independent = True

    def forward(self, input):
        return input

    def backward(self, grad_output):
        return grad_output
