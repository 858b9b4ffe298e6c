"""SIMD vectors for the numba CPU kernels: a value of one vector register's lanes (64 bytes,
16 float32 or 8 float64, where numba compiles for AVX-512; else 32 bytes) that numba keeps
in a register, and the operations the register-blocked kernels need.

Why: numba's loops over arrays do not become register-blocked vector code. A block of
accumulators kept in an array is re-loaded and stored around every multiply-add (LLVM cannot
prove the array does not alias the inputs), and a 16-long loop over output channels falls
to the scalar remainder of LLVM's interleaved vector loop; LeNet's second convolution ran
at 7-8 GFLOP/s written that way, against 104-138 for PyTorch's oneDNN (bench/NOTES.md,
fifth pass). A :class:`Vec` is an LLVM ``<L x float>`` value: a kernel holds its
accumulators in local variables of this type, which live in registers across its
reduction loop, and every multiply-add is one ``llvm.fma`` on the whole vector.

- ``vzero(a)``: a vector of zeros of ``a``'s dtype (``a`` only types it), and
  ``vlanes(a)``: how many lanes (L) such a vector has, a constant;
- ``vload(a, i)``: ``a[i : i + L]`` of a 1-D C-contiguous array (unaligned; the caller keeps
  ``i + L <= a.size``);
- ``vstore(a, i, v)``: ``a[i : i + L] = v`` into a writeable one;
- ``vadd(u, v)``: ``u + v``, lane by lane; ``vrelu(v)``: 0 in the lanes where ``v < 0``
  (a NaN or -0 stays, as in torch.relu);
- ``vfma(acc, s, w)``: ``acc + s * w`` for a scalar ``s`` broadcast to every lane, fused
  (one rounding), in lane order.

``lanes(dtype)`` is L, for Python code. The width follows the CPU numba compiles for
(:func:`_target_vector_bytes`), so that a kernel's ten or twelve accumulators and their
operands fit its registers: 64-byte vectors on a target without AVX-512 are split and
spill (compiled for one, a CIFAR-sized forward became 24 ymm FMAs and 160 stack moves and
ran at 0.84x the GEMM path); with 32-byte vectors the direct paths ran 1.1-2.4x its speed,
timed on this AVX-512 machine compiling for AVX2 features through ``NUMBA_CPU_FEATURES``,
OpenBLAS on its Haswell kernels (the second review, bench/NOTES.md fifth pass).

The kernels that use these are cached by numba (``cache=True``), which keys a cache on the
kernel's own source file only: after editing this module, clear ``__pycache__`` (or touch
the modules that use it) so that no kernel keeps the old code.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils, codegen, config
from numba.extending import intrinsic, models, register_model


def _target_vector_bytes() -> int:
    """The vector width of the CPU numba compiles for, as numba decides it: its features
    are ``NUMBA_CPU_FEATURES`` when set, else the host's; 64 bytes with AVX-512F, 16
    without AVX (``NUMBA_ENABLE_AVX=0``, which numba also sets for some CPUs), else 32."""
    if not config.ENABLE_AVX:
        return 16
    features = config.CPU_FEATURES
    if features is None:
        features = codegen.get_host_cpu_features()
    return 64 if "+avx512f" in features.split(",") else 32


VECTOR_BYTES = _target_vector_bytes()


def lanes(dtype) -> int:
    """How many elements of ``dtype`` one vector holds."""
    return VECTOR_BYTES // np.dtype(dtype).itemsize


class Vec(types.Type):
    """The numba type of a vector of ``lanes(dtype)`` elements of ``dtype``."""

    def __init__(self, dtype: types.Float):
        self.dtype = dtype
        self.count = VECTOR_BYTES * 8 // dtype.bitwidth
        super().__init__(name=f"Vec({dtype}x{self.count})")


@register_model(Vec)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        element = ir.FloatType() if fe_type.dtype.bitwidth == 32 else ir.DoubleType()
        super().__init__(dmm, fe_type, ir.VectorType(element, fe_type.count))


def _llvm_vector(context, vec: Vec) -> ir.VectorType:
    return context.get_value_type(vec)


def _float_array(a) -> bool:
    return (isinstance(a, types.Array) and isinstance(a.dtype, types.Float) and a.ndim == 1
            and a.layout == "C")


def _vector_pointer(context, builder, array_type, array, index, vec: Vec):
    data = context.make_array(array_type)(context, builder, array).data
    return builder.bitcast(builder.gep(data, [index]), _llvm_vector(context, vec).as_pointer())


@intrinsic
def vzero(typingctx, like):
    if not _float_array(like):
        return None
    vec = Vec(like.dtype)

    def codegen(context, builder, sig, args):
        return ir.Constant(_llvm_vector(context, vec), None)
    return vec(like), codegen


@intrinsic
def vlanes(typingctx, like):
    if not _float_array(like):
        return None
    count = Vec(like.dtype).count

    def codegen(context, builder, sig, args):
        return context.get_constant(types.intp, count)
    return types.intp(like), codegen


@intrinsic
def vload(typingctx, a, index):
    if not (_float_array(a) and isinstance(index, types.Integer)):
        return None
    vec = Vec(a.dtype)

    def codegen(context, builder, sig, args):
        index = context.cast(builder, args[1], sig.args[1], types.intp)
        ptr = _vector_pointer(context, builder, sig.args[0], args[0], index, vec)
        return builder.load(ptr, align=a.dtype.bitwidth // 8)
    return vec(a, index), codegen


@intrinsic
def vstore(typingctx, a, index, v):
    if not (_float_array(a) and a.mutable and isinstance(index, types.Integer)
            and v == Vec(a.dtype)):
        return None

    def codegen(context, builder, sig, args):
        index = context.cast(builder, args[1], sig.args[1], types.intp)
        ptr = _vector_pointer(context, builder, sig.args[0], args[0], index, v)
        builder.store(args[2], ptr, align=a.dtype.bitwidth // 8)
        return context.get_dummy_value()
    return types.none(a, index, v), codegen


@intrinsic
def vadd(typingctx, a, b):
    if not (isinstance(a, Vec) and b == a):
        return None

    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], args[1])
    return a(a, b), codegen


@intrinsic
def vrelu(typingctx, v):
    if not isinstance(v, Vec):
        return None

    def codegen(context, builder, sig, args):
        zero = ir.Constant(_llvm_vector(context, v), None)
        return builder.select(builder.fcmp_ordered("<", args[0], zero), zero, args[0])
    return v(v), codegen


@intrinsic
def vfma(typingctx, acc, s, w):
    if not (isinstance(acc, Vec) and w == acc and isinstance(s, (types.Float, types.Integer))):
        return None

    def codegen(context, builder, sig, args):
        vt = _llvm_vector(context, acc)
        scalar = context.cast(builder, args[1], sig.args[1], acc.dtype)
        splat = builder.insert_element(ir.Constant(vt, None), scalar,
                                       ir.Constant(ir.IntType(32), 0))
        splat = builder.shuffle_vector(splat, ir.Constant(vt, None),
                                       ir.Constant(ir.VectorType(ir.IntType(32), acc.count),
                                                   [0] * acc.count))
        suffix = f"v{acc.count}f{acc.dtype.bitwidth}"
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vt, [vt, vt, vt]),
                                             f"llvm.fma.{suffix}")
        return builder.call(fma, [splat, args[2], args[0]])
    return acc(acc, s, w), codegen
