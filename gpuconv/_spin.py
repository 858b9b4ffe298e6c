"""Waiting without sleeping, for gpuconv's thread pool (:mod:`gpuconv.threads`): numba
functions that watch a word of an int64 array with the GIL released.

Why: on the 2-core development machine (a virtual machine) a thread that sleeps on a lock
took 0.1-0.7 ms to wake, and a thread blocked on the GIL some 25 us. A pool thread that
spins here instead keeps its core, sees another thread's store within a microsecond, and
needs no GIL meanwhile, so the thread that stores runs Python at full speed
(bench/NOTES.md, 2026-12-08).

How: the loads are atomic with acquire ordering and the adds atomic read-modify-writes,
emitted as LLVM atomics (a plain load in a loop is hoisted out of it, and the spin never
ends); on x86 each round of a spin runs ``pause``, the hint for spin loops. Every spin is
bounded by a number of rounds (:func:`rounds_per_second` converts a time), after which
the caller sleeps the ordinary way.
"""
from __future__ import annotations

import platform
import time

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

__all__ = ["wait_while", "add_then_wait_while", "wait_until", "add", "words", "warm_up",
           "rounds_per_second"]

_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")


def _word_args(words, i) -> bool:
    """Whether ``words`` is a C-contiguous int64 array and ``i`` an integer: the intrinsics
    address ``words.data + i`` (no strides, no bounds check: the pool's own arrays)."""
    return (isinstance(words, types.Array) and words.dtype == types.int64
            and words.layout == "C" and isinstance(i, types.Integer))


def _word(context, builder, signature, args):
    array = context.make_array(signature.args[0])(context, builder, args[0])
    return builder.gep(array.data, [args[1]])


@intrinsic
def _load(typingctx, words, i):
    """``words[i]``, an atomic load with acquire ordering."""
    if not _word_args(words, i):
        return None

    def codegen(context, builder, signature, args):
        return builder.load_atomic(_word(context, builder, signature, args), "acquire", 8)
    return types.int64(words, i), codegen


@intrinsic
def _increment(typingctx, words, i):
    """``words[i] += 1``, one atomic read-modify-write."""
    if not _word_args(words, i):
        return None

    def codegen(context, builder, signature, args):
        builder.atomic_rmw("add", _word(context, builder, signature, args),
                           ir.Constant(ir.IntType(64), 1), "acq_rel")
        return context.get_dummy_value()
    return types.void(words, i), codegen


@intrinsic
def _pause(typingctx):
    """x86's ``pause`` (nothing elsewhere)."""
    def codegen(context, builder, signature, args):
        if _X86:
            pause = builder.module.declare_intrinsic(
                "llvm.x86.sse2.pause", fnty=ir.FunctionType(ir.VoidType(), []))
            builder.call(pause, [])
        return context.get_dummy_value()
    return types.void(), codegen


@njit(nogil=True, cache=True)
def wait_while(words, i, value, rounds):
    """Spin while ``words[i] == value``, at most ``rounds`` rounds; return ``words[i]``."""
    for _ in range(rounds):
        seen = _load(words, i)
        if seen != value:
            return seen
        _pause()
    return _load(words, i)


@njit(nogil=True, cache=True)
def add_then_wait_while(counter, j, words, i, value, rounds):
    """``counter[j] += 1`` once this thread has released the GIL (so that a thread waiting
    for the count takes the GIL without waiting for it), then :func:`wait_while`."""
    _increment(counter, j)
    return wait_while(words, i, value, rounds)


@njit(nogil=True, cache=True)
def wait_until(words, i, target, rounds):
    """Spin until ``words[i] == target``, at most ``rounds`` rounds; return ``words[i]``."""
    for _ in range(rounds):
        seen = _load(words, i)
        if seen == target:
            return seen
        _pause()
    return _load(words, i)


@njit(cache=True)
def add(counter, j):
    """``counter[j] += 1``, atomic, the GIL held throughout (no handover mid-job)."""
    _increment(counter, j)


def words(n: int) -> np.ndarray:
    """``n`` zeroed words, the arrays the functions here watch and count in."""
    return np.zeros(n, np.int64)


def warm_up() -> None:
    """Compile (or load from numba's cache) every function here, before a pool's threads
    would wait on a compilation."""
    word, count = np.zeros(1, np.int64), np.zeros(1, np.int64)
    wait_while(word, 0, 1, 1)
    wait_until(word, 0, 0, 1)
    add(count, 0)
    add_then_wait_while(count, 0, word, 0, 1, 1)


def rounds_per_second(samples: int = 5) -> float:
    """How many rounds of :func:`wait_while` this machine spins per second: the fastest of
    ``samples`` timings of about a millisecond each (a sample the OS interrupts runs slow)."""
    word = np.zeros(1, np.int64)
    wait_while(word, 0, 0, 1)   # compiled (or loaded) before timing
    rounds, best = 1 << 12, 0.0
    while rounds < 1 << 30:   # grow a sample until it takes a millisecond
        start = time.perf_counter()
        wait_while(word, 0, 0, rounds)
        if time.perf_counter() - start > 1e-3:
            break
        rounds *= 2
    for _ in range(samples):
        start = time.perf_counter()
        wait_while(word, 0, 0, rounds)
        best = max(best, rounds / max(time.perf_counter() - start, 1e-9))
    return best

