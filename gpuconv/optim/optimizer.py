"""The optimizer base class: parameter groups, per-parameter state and checkpoints.

A parameter is any object ``p`` with ``p.data`` (a NumPy or CuPy float array that the
optimizer updates in place) and ``p.grad`` (an array of the same shape, dtype and device,
or None when the parameter received no gradient; it is then skipped). Optimizers never
write to ``p.grad``.

Each optimizer implements ``_update(p, grad, state, group)``: the update of a single
parameter from its gradient, its state dict and its group's hyperparameters, done in place.
It keeps the state dict and the step count and hands the arithmetic to :func:`apply_update`,
which runs the registered op ``<optimizer>_step`` (the NumPy reference on the CPU).

On CuPy parameters the step is one launch per dtype for all the parameters
(``gpuconv/optim/_multi_tensor.py``): each optimizer names its multi-tensor kernel
(``_multi_tensor``) and implements ``_device_entry(p, state, group) -> (buffers, flags)``
(its state arrays, made on first use) and ``_hyperparameters(group) -> tuple`` (the row of
doubles its kernel reads, the learning rate first). Hyperparameters and step counts then
live on the device, so a CUDA graph replay of the step sees a scheduler's learning rate and
counts its steps; :meth:`state_dict` reads the counts back.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import numpy as np

from .. import _checks as C, backend, kernels
from ._multi_tensor import DeviceState, Entry

__all__ = ["Optimizer"]


class Optimizer:
    """Base class: holds ``param_groups`` and ``state`` and drives ``_update``.

    ``params`` is an iterable of parameters, or a list of dicts ``{"params": [...], "lr": ...}``
    whose missing keys take the constructor's values (``defaults``), as in ``torch.optim``.

    ``state[i]`` is the state of the ``i``-th parameter counted across the groups in order
    (the numbering ``state_dict`` uses): arrays of the parameter's shape, dtype and device,
    and ints (step counts).
    """

    # The kernel family of the one-launch GPU step (kernels/optim.cu <name>_multi_step).
    _multi_tensor: str = ""

    def __init__(self, params: Iterable, defaults: dict[str, Any]) -> None:
        self._name = type(self).__name__
        self._device: DeviceState | None = None
        self.defaults = self._check_hyperparameters(dict(defaults))
        self.param_groups: list[dict[str, Any]] = []
        self.state: dict[int, dict[str, Any]] = {}
        if hasattr(params, "data") or C.is_array(params):
            raise TypeError(f"{self._name}: params must be an iterable of parameters or of "
                            f"dicts, got a single {type(params).__name__}")
        groups = list(params)
        if not groups:
            raise ValueError(f"{self._name}: params is an empty list; give at least one parameter")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    # ------------------------------------------------------------------ groups

    def _check_hyperparameters(self, group: dict[str, Any]) -> dict[str, Any]:
        """Validate and normalise the hyperparameters of ``group`` (subclasses extend)."""
        real(self._name, group, "lr", low=0.0)
        real(self._name, group, "weight_decay", low=0.0)
        real(self._name, group, "l1", low=0.0)
        return group

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Append a group; its missing hyperparameters take the values in ``defaults``."""
        if not isinstance(param_group, dict) or "params" not in param_group:
            raise TypeError(f"{self._name}: a parameter group must be a dict with a 'params' "
                            f"key, got {type(param_group).__name__}")
        unknown = set(param_group) - set(self.defaults) - {"params"}
        if unknown:
            raise ValueError(f"{self._name}: unknown hyperparameter(s) {sorted(unknown)} in a "
                             f"parameter group; known: {sorted(self.defaults)}")
        params = param_group["params"]
        params = [params] if hasattr(params, "data") else list(params)
        if not params:
            raise ValueError(f"{self._name}: a parameter group has an empty params list")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        for i, p in enumerate(params):
            if not (hasattr(p, "data") and hasattr(p, "grad")):
                raise TypeError(f"{self._name}: params[{i}] must have .data and .grad, "
                                f"got {type(p).__name__}")
            C.float_array(self._name, f"params[{i}].data", p.data)
            if id(p) in seen:
                raise ValueError(f"{self._name}: params[{i}] appears more than once "
                                 "(in this group or an earlier one)")
            seen.add(id(p))
        group = {**self.defaults, **{k: v for k, v in param_group.items() if k != "params"}}
        group = self._check_hyperparameters(group)
        group["params"] = params
        self.param_groups.append(group)
        if getattr(self, "_device", None) is not None:  # one more row of step counts
            self._read_device_steps()
            self._device = None

    # ------------------------------------------------------------------ stepping

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradients: ``p.grad = None`` (default), or fill them with zeros in place."""
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad[...] = 0

    def step(self, closure: Callable[[], Any] | None = None):
        """Update every parameter that has a gradient; returns ``closure()`` when given.

        CuPy parameters are updated together, one launch per dtype, without a host
        synchronisation; NumPy parameters one by one."""
        loss = None if closure is None else closure()
        on_device, on_host = [], []
        states = self.state
        for index, group, p in self._indexed_params():
            grad = p.grad
            if grad is None:
                continue
            # A NumPy parameter with a gradient like it (the common case) needs no more checks.
            on_numpy = _numpy_pair(p.data, grad)
            if not on_numpy:
                self._check_grad(index, p, grad)
            item = (index, group, p, grad, states.setdefault(index, {}))
            on_gpu = not on_numpy and backend.device_of(p.data) == "cuda"
            (on_device if on_gpu else on_host).append(item)
        if on_host:
            self._host_step(on_host)
        if on_device:
            self._device_step(on_device)
        return loss

    def _host_step(self, items: list) -> None:
        """Update the NumPy parameters of ``items`` (index, group, param, grad, state), one
        ``_update`` each; an optimizer with a multi-parameter CPU kernel takes some of them
        together."""
        for _, group, p, grad, state in items:
            self._update(p, grad, state, group)

    def _check_grad(self, index: int, p, grad) -> None:
        """A float array of ``p.data``'s shape, dtype and device; else an error naming it."""
        name = f"params[{index}].grad"
        C.float_array(self._name, f"{name} (parameter of shape {tuple(p.data.shape)})", grad)
        C.same_kind(self._name, f"params[{index}].data", p.data, **{name: grad})
        C.shape_is(self._name, name, grad, p.data.shape)

    def _device_step(self, items: list) -> None:
        """One launch per dtype over ``items`` (index, group, param, grad, state); arrays of
        another layout go through contiguous copies that are written back."""
        if self._device is None:
            n = sum(len(g["params"]) for g in self.param_groups)
            self._device = DeviceState(
                n, [self.state.get(i, {}).get("step", 0) for i in range(n)], self._multi_tensor)
        self.refresh_device_hyperparameters()
        group_of = {id(g): i for i, g in enumerate(self.param_groups)}
        entries, write_back = [], []
        for index, group, p, grad, state in items:
            xp = backend.array_module(p.data)
            buffers, flags = self._device_entry(p, state, group)
            arrays = [p.data, *buffers]
            dense = [a if a is None or a.flags.c_contiguous else xp.ascontiguousarray(a)
                     for a in arrays]
            write_back += [(a, d) for a, d in zip(arrays, dense) if d is not a]
            entries.append(Entry(index, group_of[id(group)], dense[0],
                                 xp.ascontiguousarray(grad), tuple(dense[1:]), flags))
        self._device.step(entries)
        for a, d in write_back:
            a[...] = d

    def refresh_device_hyperparameters(self) -> None:
        """Upload the hyperparameters that changed since the last GPU step (a scheduler's
        learning rate) to the device, where a replayed CUDA graph of the step reads them;
        one asynchronous copy when something changed, nothing otherwise."""
        if self._device is not None:
            self._device.set_hyperparameters([self._hyperparameters(g)
                                              for g in self.param_groups])

    def _read_device_steps(self) -> None:
        """Copy the step counts that GPU steps advanced on the device into ``state`` (a
        synchronisation; for checkpoints and new parameter groups)."""
        if self._device is None:
            return
        steps = self._device.host_steps()
        for i, s in self.state.items():
            if "step" in s:
                s["step"] = int(steps[i])

    def _device_entry(self, p, state: dict[str, Any], group: dict[str, Any]) -> tuple:
        """``(buffers, flags)`` of ``p`` for the multi-tensor kernel: its state arrays in the
        kernel's order (None where unused), made on first use, and the table's flags."""
        raise NotImplementedError

    def _hyperparameters(self, group: dict[str, Any]) -> tuple:
        """The row of doubles the multi-tensor kernel reads for ``group``, lr first."""
        raise NotImplementedError

    def _update(self, p, grad, state: dict[str, Any], group: dict[str, Any]) -> None:
        """Update ``p.data`` in place from ``grad`` (never written to). ``state`` is this
        parameter's dict (empty before its first update), ``group`` its hyperparameters."""
        raise NotImplementedError

    def _indexed_params(self):
        index = 0
        for group in self.param_groups:
            for p in group["params"]:
                yield index, group, p
                index += 1

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, Any]:
        """A snapshot ``{"state": {i: {name: array | int}}, "param_groups": [...]}``.

        Parameters are named by their index across the groups (``"params": [0, 1, ...]``).
        Arrays are copies on the parameters' device, so later steps leave the snapshot alone.
        """
        groups, start = [], 0
        for group in self.param_groups:
            saved = {k: v for k, v in group.items() if k != "params"}
            saved["params"] = list(range(start, start + len(group["params"])))
            start += len(group["params"])
            groups.append(saved)
        self._read_device_steps()
        state = {i: {k: (v.copy() if C.is_array(v) else v) for k, v in s.items()}
                 for i, s in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a ``state_dict`` taken from an optimizer of the same kind over parameters
        of the same shapes in the same order.

        Hyperparameters (``lr`` included) come from the snapshot; state arrays are copied to
        each parameter's device and dtype. Anything that does not fit raises ``ValueError``.
        """
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"{self._name}: the state has {len(saved_groups)} parameter "
                             f"groups but this optimizer has {len(self.param_groups)}")
        groups = [self._loaded_group(g, saved, i)
                  for i, (g, saved) in enumerate(zip(self.param_groups, saved_groups))]
        flat = [p for g in self.param_groups for p in g["params"]]
        state = {}
        for index, saved in state_dict["state"].items():
            index = int(index)
            if not 0 <= index < len(flat):
                raise ValueError(f"{self._name}: the state names parameter {index} but there "
                                 f"are {len(flat)} parameters")
            state[index] = {name: self._loaded_value(flat[index], index, name, value)
                            for name, value in saved.items()}
        self.param_groups, self.state = groups, state
        self._device = None  # rebuilt from the loaded step counts at the next GPU step

    def _loaded_group(self, group: dict[str, Any], saved: Mapping[str, Any], i: int) -> dict:
        if len(saved["params"]) != len(group["params"]):
            raise ValueError(f"{self._name}: parameter group {i} of the state has "
                             f"{len(saved['params'])} parameters but this optimizer's has "
                             f"{len(group['params'])}")
        keys = set(saved) - {"params", "initial_lr"}
        if keys != set(self.defaults):
            raise ValueError(f"{self._name}: parameter group {i} of the state has "
                             f"hyperparameters {sorted(keys)}, expected {sorted(self.defaults)} "
                             "(a state from another kind of optimizer?)")
        loaded = {k: _plain(v) for k, v in saved.items() if k != "params"}
        loaded = self._check_hyperparameters(loaded)
        loaded["params"] = group["params"]
        return loaded

    def _loaded_value(self, p, index: int, name: str, value: Any):
        if not C.is_array(value) or np.issubdtype(np.dtype(value.dtype), np.integer):
            return int(value)
        if tuple(value.shape) != tuple(p.data.shape):
            raise ValueError(f"{self._name}: state[{index}][{name!r}] has shape "
                             f"{tuple(value.shape)} but parameter {index} has shape "
                             f"{tuple(p.data.shape)}")
        xp = backend.array_module(p.data)
        if xp is np:
            value = backend.to_numpy(value)
        return xp.array(value, dtype=p.data.dtype, copy=True)

    def state_arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        """The ``state_dict`` flattened to ``{str: numpy.ndarray}``, ready for ``np.savez``.

        Keys are ``f"{prefix}param_groups.{g}.{name}"`` (hyperparameters as 0-d arrays, betas
        as a 1-d array, ``params`` as int64 indices) and ``f"{prefix}state.{i}.{name}"``
        (host copies of the state arrays; step counts as 0-d int64). Nothing needs pickle.
        """
        sd = self.state_dict()
        out: dict[str, np.ndarray] = {}
        for g, group in enumerate(sd["param_groups"]):
            for name, value in group.items():
                out[f"{prefix}param_groups.{g}.{name}"] = _numeric_array(self._name, name, value)
        for i, state in sd["state"].items():
            for name, value in state.items():
                out[f"{prefix}state.{i}.{name}"] = (backend.to_numpy(value) if C.is_array(value)
                                                    else np.asarray(value, dtype=np.int64))
        return out

    def load_state_arrays(self, arrays: Mapping[str, Any], prefix: str = "") -> None:
        """Inverse of :meth:`state_arrays`: reads the keys that start with ``prefix`` from
        ``arrays`` (a dict, or the ``NpzFile`` of ``np.load(path, allow_pickle=False)``)."""
        groups: dict[int, dict[str, Any]] = {}
        state: dict[int, dict[str, Any]] = {}
        for key in arrays.keys():
            if not key.startswith(prefix):
                continue
            parts = key[len(prefix):].split(".")
            if (len(parts) != 3 or parts[0] not in ("param_groups", "state")
                    or not parts[1].isdigit()):
                raise ValueError(f"{self._name}: unexpected key {key!r} in the state arrays")
            table = groups if parts[0] == "param_groups" else state
            table.setdefault(int(parts[1]), {})[parts[2]] = np.asarray(arrays[key])
        if sorted(groups) != list(range(len(groups))):
            raise ValueError(f"{self._name}: the state arrays have parameter groups "
                             f"{sorted(groups)}; expected 0..n-1")
        param_groups = []
        for g in range(len(groups)):
            group = dict(groups[g])
            if "params" not in group:
                raise ValueError(f"{self._name}: the state arrays lack "
                                 f"{prefix}param_groups.{g}.params")
            group["params"] = [int(i) for i in group["params"]]
            param_groups.append(group)
        self.load_state_dict({"state": state, "param_groups": param_groups})


# ---------------------------------------------------------------------- helpers for subclasses

def real(op: str, group: dict[str, Any], name: str, **bounds) -> None:
    """Replace ``group[name]`` by its value as a validated float (bounds as ``finite_float``)."""
    group[name] = C.finite_float(op, name, group[name], **bounds)


def apply_update(op: str, param, grad, buffers: list, *scalars) -> None:
    """Run the registered in-place update ``op`` on ``param`` and its state ``buffers`` (None
    for an unused one); the contract is in ``gpuconv/kernels/reference/optim.py``.

    The registry picks the implementation from the array's device: one fused kernel launch
    on a GPU, the NumPy reference on the CPU. The update wants C-contiguous arrays; any other
    parameter or buffer is updated through a contiguous copy that is written back.
    """
    if _contiguous_numpy(param, grad, buffers):   # the common case, without the copies' checks
        kernels.dispatch(op, None, param, grad, *buffers, *scalars)
        return
    xp = backend.array_module(param)
    arrays = [param, *buffers]
    dense = [a if a is None or a.flags.c_contiguous else xp.ascontiguousarray(a)
             for a in arrays]
    kernels.dispatch(op, None, dense[0], xp.ascontiguousarray(grad), *dense[1:], *scalars)
    for a, d in zip(arrays, dense):
        if d is not a:
            a[...] = d


# The gradient dtypes of the step's fast path: a gradient of one of them, of its parameter's
# dtype and shape, both plain NumPy arrays, passes every check of _check_grad.
_NUMPY_FLOATS = frozenset(np.dtype(d) for d in ("float16", "float32", "float64"))


def _numpy_pair(data, grad) -> bool:
    """Whether ``data`` and ``grad`` are NumPy float arrays of one shape and dtype."""
    return (type(data) is np.ndarray and type(grad) is np.ndarray and grad.dtype == data.dtype
            and grad.shape == data.shape and grad.dtype in _NUMPY_FLOATS)


def _contiguous_numpy(param, grad, buffers: list) -> bool:
    return (type(param) is np.ndarray and param.flags.c_contiguous
            and type(grad) is np.ndarray and grad.flags.c_contiguous
            and all(b is None or (type(b) is np.ndarray and b.flags.c_contiguous)
                    for b in buffers))


def _plain(value: Any):
    """A hyperparameter read back from arrays as a Python number, bool or tuple."""
    if not C.is_array(value):
        return tuple(value) if isinstance(value, list) else value
    value = np.asarray(value)
    return value.item() if value.ndim == 0 else tuple(value.tolist())


def _numeric_array(op: str, name: str, value: Any) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{op}: hyperparameter {name!r} = {value!r} cannot be stored as a "
                        "numeric array")
    return arr.astype(np.int64) if name == "params" else arr

