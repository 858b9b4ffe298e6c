"""The GPU that the CUDA emulator stands for, and how many blocks of a kernel it could keep
resident: what a launcher asks before a cooperative launch (whose blocks must all be resident
at once) and what ``fake_cupy`` checks such a launch against.

The target is an H100 (SXM) by default, an A100 with ``GPUCONV_EMULATED_GPU=A100``. A
kernel's resources come from ptxas's report for the target's architecture (``nvcc
--resource-usage`` on the same source and ``-D``/``-I`` options the launcher gives NVRTC):
registers per thread and static shared memory per entry point. Occupancy follows the CUDA
occupancy calculator's rules: warps per SM, registers allocated per warp in units of 256,
shared memory per block rounded up to 128 bytes plus the 1 KB the driver reserves per block
(sm_80 and later), and the blocks-per-SM limit.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

KB = 1024
# Per-SM and per-block limits (CUDA C Programming Guide, "Compute Capabilities"; SM counts of
# the H100 SXM5 and the A100 SXM4).
GPUS = {
    "H100": dict(name="NVIDIA H100 80GB HBM3", arch="sm_90", major=9, minor=0, sms=132,
                 regs_per_sm=65536, max_threads_per_sm=2048, max_blocks_per_sm=32,
                 smem_per_sm=228 * KB, smem_per_block_optin=227 * KB),
    "A100": dict(name="NVIDIA A100-SXM4-80GB", arch="sm_80", major=8, minor=0, sms=108,
                 regs_per_sm=65536, max_threads_per_sm=2048, max_blocks_per_sm=32,
                 smem_per_sm=164 * KB, smem_per_block_optin=163 * KB),
}
REGISTER_UNIT = 256            # registers are allocated per warp in units of this many
SMEM_UNIT = 128                # shared memory is allocated per block in units of this many bytes
SMEM_RESERVED_PER_BLOCK = KB   # what the driver keeps per block on sm_80 and later
SMEM_DEFAULT_DYNAMIC = 48 * KB  # more dynamic shared memory needs the function attribute set
_CACHE = Path(tempfile.gettempdir()) / "gpuconv-cuda-emu"


def target() -> dict:
    """The emulated GPU's limits (``GPUCONV_EMULATED_GPU``, default H100)."""
    name = os.environ.get("GPUCONV_EMULATED_GPU", "H100").upper()
    if name not in GPUS:
        raise ValueError(f"GPUCONV_EMULATED_GPU must be one of {', '.join(GPUS)}, got {name!r}")
    return GPUS[name]


def device_properties(device_name: bytes) -> dict:
    """``cupy.cuda.runtime.getDeviceProperties`` of the emulated device."""
    gpu = target()
    return {"name": device_name + f", as an {gpu['name']}".encode(), "totalGlobalMem": 1 << 30,
            "multiProcessorCount": gpu["sms"], "major": gpu["major"], "minor": gpu["minor"],
            "regsPerMultiprocessor": gpu["regs_per_sm"],
            "maxThreadsPerMultiProcessor": gpu["max_threads_per_sm"],
            "maxBlocksPerMultiProcessor": gpu["max_blocks_per_sm"],
            "sharedMemPerMultiprocessor": gpu["smem_per_sm"],
            "sharedMemPerBlockOptin": gpu["smem_per_block_optin"],
            "sharedMemPerBlock": SMEM_DEFAULT_DYNAMIC, "cooperativeLaunch": 1}


@dataclass(frozen=True)
class Resources:
    """What ptxas says one entry point uses (local memory: its stack frame and spills)."""

    registers: int
    static_smem: int
    local_bytes: int = 0


_ENTRY = re.compile(r"Compiling entry function '(\w+)'")
_LOCAL = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers(?:.*?(\d+) bytes smem)?")
# Part of the cache key: a report cached in an older format is read again.
_FORMAT = "2"


def parse_report(text: str) -> dict[str, Resources]:
    """``{entry point: Resources}`` from ptxas's ``-v`` output."""
    out, name, local = {}, None, 0
    for line in text.splitlines():
        m = _ENTRY.search(line)
        if m:
            name, local = m.group(1), 0
            continue
        m = _LOCAL.search(line)
        if m:
            local = sum(int(v) for v in m.groups())
            continue
        m = _USED.search(line)
        if m and name is not None:
            out[name] = Resources(int(m.group(1)), int(m.group(2) or 0), local)
            name = None
    return out


def resource_report(code: str, flags: list[str]) -> dict[str, Resources]:
    """ptxas's resources of every entry point of ``code`` for the target's architecture
    (cached on disk by the source, the options, every header they include and the arch)."""
    arch = target()["arch"]
    headers = sorted(h for f in flags if f.startswith("-I") for h in Path(f[2:]).glob("*.cuh"))
    key = hashlib.sha256("\0".join([_FORMAT, code, arch, *flags,
                                     *(h.read_text() for h in headers)])
                         .encode()).hexdigest()[:20]
    cached = _CACHE / f"{key}.resources.json"
    if cached.exists():
        return {k: Resources(**v) for k, v in json.loads(cached.read_text()).items()}
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        raise RuntimeError("emulated cupy: the occupancy of a kernel needs ptxas's resource "
                           "report, and nvcc is not installed")
    _CACHE.mkdir(parents=True, exist_ok=True)
    # A name of this process's own: two test runs at once must not compile each other's
    # half-written source.
    source = _CACHE / f"{key}.{os.getpid()}.resources.cu"
    source.write_text(code)
    cmd = [nvcc, "-std=c++17", f"-arch={arch}", "-cubin", "--resource-usage", *flags,
           "-o", os.devnull, str(source)]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True)
    finally:
        source.unlink(missing_ok=True)
    if result.returncode != 0:
        raise RuntimeError(f"emulated cupy: {' '.join(cmd)} failed:\n{result.stderr}")
    report = parse_report(result.stdout + result.stderr)
    partial = cached.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps({k: vars(v) for k, v in report.items()}))
    partial.replace(cached)
    return report


def blocks_per_sm(res: Resources, threads: int, dynamic_smem: int, gpu: dict | None = None
                  ) -> tuple[int, str]:
    """(blocks of ``threads`` threads with ``dynamic_smem`` bytes that one SM keeps resident,
    the limit that decides it)."""
    gpu = gpu or target()
    warps = math.ceil(threads / 32)
    smem = res.static_smem + dynamic_smem
    if smem > gpu["smem_per_block_optin"]:
        return 0, f"shared memory: {smem} bytes per block, the most is {gpu['smem_per_block_optin']}"
    regs_per_warp = math.ceil(res.registers * 32 / REGISTER_UNIT) * REGISTER_UNIT
    smem_per_block = math.ceil((smem + SMEM_RESERVED_PER_BLOCK) / SMEM_UNIT) * SMEM_UNIT
    limits = {
        "blocks per SM": gpu["max_blocks_per_sm"],
        "threads": gpu["max_threads_per_sm"] // (warps * 32),
        "registers": (gpu["regs_per_sm"] // regs_per_warp) // warps if regs_per_warp else 10**9,
        "shared memory": gpu["smem_per_sm"] // smem_per_block,
    }
    reason = min(limits, key=limits.get)
    return limits[reason], reason
