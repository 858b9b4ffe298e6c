"""pytest plugin and JSON summaries for bench/gpu_check.sh (the GPU machine's stages).

As a plugin (``-p gpu_check`` with ``bench`` on the path), by environment variable:

- ``GPUCONV_SMOKE=1``: of the selected tests, keep the first case of each (test, impl, op)
  (the op: the first word of the case's id that names a registered op, as in
  ``relu()-cuda-(7,)-float32``), so that every GPU impl of every op runs once on a small
  shape against the reference; every
  registered ``cuda`` impl counts its calls, and the (op, impl) pairs that no kept test
  called are listed at the end.
- ``GPUCONV_NO_MEMORY_POOL=1``: CuPy allocates every array with cudaMalloc (no memory pool),
  so that compute-sanitizer memcheck sees each allocation's bounds.

As a script: ``python3 bench/gpu_check.py summary STAGE RC LOG JUNIT_XML OUT_JSON [KEY=VALUE
...]`` writes the stage's JSON: exit code, test counts (in all and per test file) from the
JUnit XML where there is one, and the extra keys.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import sys
import xml.etree.ElementTree as ElementTree
from collections import Counter, defaultdict
from pathlib import Path

import pytest

_kept: set = set()
_called: Counter = Counter()


def _counting(op: str, name: str, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        _called[op, name] += 1
        return fn(*args, **kwargs)
    return wrapper


def pytest_configure(config):
    if os.environ.get("GPUCONV_NO_MEMORY_POOL") == "1":
        import cupy

        cupy.cuda.set_allocator(None)
        cupy.cuda.set_pinned_memory_allocator(None)
    if os.environ.get("GPUCONV_SMOKE") == "1":
        from gpuconv import kernels

        for op in kernels.ops():
            for impl in kernels.implementations(op):
                if impl.device == "cuda":
                    kernels._REGISTRY[op][impl.name] = dataclasses.replace(
                        impl, fn=_counting(op, impl.name, impl.fn))


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session, config, items):
    if os.environ.get("GPUCONV_SMOKE") != "1":
        return
    from gpuconv import kernels

    ops = set(kernels.ops())
    keep, drop = [], []
    for item in items:
        impl = getattr(item, "callspec", None) and item.callspec.params.get("impl")
        words = [re.match(r"[a-z][a-z0-9_]*", token) for token in
                 (item.callspec.id.split("-") if impl else [])]
        op = next((w.group() for w in words if w and w.group() in ops), None)
        key = (item.module.__name__, item.originalname, impl, op)
        if impl is None or key in _kept:
            drop.append(item)
        else:
            _kept.add(key)
            keep.append(item)
    config.hook.pytest_deselected(items=drop)
    items[:] = keep


def pytest_terminal_summary(terminalreporter):
    if os.environ.get("GPUCONV_SMOKE") != "1":
        return
    from gpuconv import kernels

    registered = {(op, i.name) for op in kernels.ops() for i in kernels.implementations(op)
                  if i.device == "cuda"}
    missing = sorted(f"{op}:{name}" for op, name in registered - set(_called))
    terminalreporter.write_line(f"smoke: {len(_kept)} tests; GPU impls called: "
                                f"{len(registered & set(_called))} of {len(registered)}; "
                                f"never called: {', '.join(missing) or 'none'}")


def _counts(junit: Path) -> dict:
    """{"total": {...}, "files": {file: {...}}} of passed/failed/error/skipped testcases."""
    per_file: dict = defaultdict(Counter)
    for case in ElementTree.parse(junit).iter("testcase"):
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "error"}.get(child.tag, child.tag)
        per_file[case.get("classname", "")][outcome] += 1
    total = sum(per_file.values(), Counter())
    return {"total": dict(total), "files": {f: dict(c) for f, c in sorted(per_file.items())}}


def _summary(stage: str, rc: str, log: str, junit: str, out: str, *extra: str) -> None:
    summary = {"stage": stage, "exit_code": int(rc) if rc.lstrip("-").isdigit() else rc,
               "log": log}
    if junit and Path(junit).is_file():
        summary["tests"] = _counts(Path(junit))
    for item in extra:
        key, _, value = item.partition("=")
        try:
            summary[key] = json.loads(value)
        except json.JSONDecodeError:
            summary[key] = value
    Path(out).write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    if len(sys.argv) < 7 or sys.argv[1] != "summary":
        sys.exit(__doc__)
    _summary(*sys.argv[2:])
