"""Every CUDA C source compiles, as it is, for Ampere and Hopper, with the real compilers and
no GPU: nvcc with warnings as errors, and NVRTC given exactly the options CuPy 14 gives it for
gpuconv's loader, at the oldest and the newest NVRTC that each GPU extra allows.

The NVRTC each GPU extra allows (pyproject.toml): ``cuda12`` takes CuPy's ``[ctk]`` and
``numba-cuda[cu12]``, both ``cuda-toolkit==12.*``, so NVRTC 12.0 to the newest 12.x; ``cuda13``
NVRTC 13.0 to the newest 13.x. The newest come with the test extra (``nvidia-cuda-nvrtc-cu12``,
``nvidia-cuda-nvrtc``); the oldest are fixed releases that the first run installs with pip into
a cache (``$GPUCONV_NVRTC_CACHE``, default ``$TMPDIR/gpuconv-nvrtc``). Where pip cannot
install one, its tests skip and say so. Each NVRTC runs in its own process (two releases of
one major share a soname), all sources in one go.

What each compiler sees, with the options CuPy would use (``cupy_nvrtc_options``):

- every source as it is, at every NVRTC release: exactly CuPy's options, a cubin for sm_90
  (sm_80 too at the newest of each major), with the ``--device-as-default-execution-space``
  that CuPy adds; and the same without that flag, as PTX for compute_80 (CuPy's PTX mode):
  the sources must not depend on a flag another loader would not pass (the generic lambdas in
  activation.cu did);
- every ``-D`` variant the launchers declare (``cuda_c.declared_variants()``; conv_igemm's
  tiles, precisions and copy widths): nvcc's front end for sm_90 (where the tiles'
  static_asserts fire), and the newest NVRTC 13 to a cubin for sm_90 on a pairwise cover of the
  variants' values (every two -D values that occur together in some variant are compiled
  together at least once), which runs ptxas on each tile and precision without compiling all
  of them at every release (a conv_igemm cubin takes about 5 s).

The kernels' results are tested on a GPU by the family test files (marker ``gpu``) and,
without one, under the CUDA emulator (tests/test_cuda_emulated.py).
"""
from __future__ import annotations

import ctypes
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gpuconv._resources import cuda_source_dir
from gpuconv.kernels import cuda_c

SOURCES = sorted(cuda_source_dir().glob("*.cu"))
ARCHS = ("80", "90")
NVCC = shutil.which("nvcc")
# (family, defines): every source as it is, and every declared -D variant.
PLAIN = [(s.stem, ()) for s in SOURCES]
VARIANTS = [(family, defines) for family, variants in sorted(cuda_c.declared_variants().items())
            for defines in variants]


def pairwise_cover(variants: list[tuple[str, tuple[str, ...]]]) -> list[tuple[str, tuple[str, ...]]]:
    """A few of ``variants`` (greedily chosen, in order) holding every pair of -D values that
    occurs together in one of them."""
    def pairs(unit):
        family, defines = unit
        return {(family, a, b) for i, a in enumerate(defines) for b in defines[i:]}

    missing = set().union(*map(pairs, variants)) if variants else set()
    chosen = []
    while missing:
        best = max(variants, key=lambda unit: len(pairs(unit) & missing))
        chosen.append(best)
        missing -= pairs(best)
    return sorted(chosen, key=variants.index)


COVER = pairwise_cover(VARIANTS)


def unit_id(unit) -> str:
    family, defines = unit
    return "-".join([family, *(d.removeprefix("GPUCONV_") for d in defines)])

# The NVRTC wheel of each GPU extra and the oldest release the extra allows.
NVRTC_WHEELS = {"cuda12": ("nvidia-cuda-nvrtc-cu12", "12.0.76"),
                "cuda13": ("nvidia-cuda-nvrtc", "13.0.48")}
RELEASES = [(extra, age) for extra in NVRTC_WHEELS for age in ("oldest", "newest")]
RELEASE_IDS = [f"{extra}-{age}" for extra, age in RELEASES]
NVRTC_CACHE = Path(os.environ.get("GPUCONV_NVRTC_CACHE",
                                  Path(tempfile.gettempdir()) / "gpuconv-nvrtc"))
DEVICE_DEFAULT = "--device-as-default-execution-space"


def test_cuda_sources_are_found_by_the_package():
    assert cuda_source_dir().is_dir()


# --------------------------------------------------------------------------- nvcc

NVCC_JOBS = [(unit, arch) for unit in PLAIN for arch in ARCHS] + [(unit, "90") for unit in VARIANTS]


def _nvcc(unit, arch: str, out: Path) -> tuple[list[str], subprocess.CompletedProcess]:
    family, defines = unit
    cmd = [NVCC, *cuda_c.nvrtc_options(family, defines), f"-arch=sm_{arch}", "-Werror",
           "all-warnings", "--ptx", "-o", str(out), str(cuda_source_dir() / f"{family}.cu")]
    return cmd, subprocess.run(cmd, capture_output=True, text=True)


@pytest.fixture(scope="module")
def nvcc_results(tmp_path_factory):
    """{(unit, arch): (command, result)}: every nvcc job, run on all cores, once."""
    out = tmp_path_factory.mktemp("nvcc")
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        results = pool.map(lambda i_job: _nvcc(*i_job[1], out / f"{i_job[0]}.ptx"),
                           enumerate(NVCC_JOBS))
        return dict(zip(NVCC_JOBS, results))


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
@pytest.mark.parametrize("job", NVCC_JOBS, ids=[f"{unit_id(u)}-sm_{a}" for u, a in NVCC_JOBS])
def test_cuda_source_compiles_with_nvcc_without_warnings(nvcc_results, job):
    cmd, result = nvcc_results[job]
    assert result.returncode == 0, f"{' '.join(cmd)}\n{result.stderr}"


# --------------------------------------------------------------------------- CuPy's options

def _cupy_include_dirs() -> tuple[list[str], str, str]:
    """(CCCL dirs, CuPy's include dir, the CUDA runtime headers) as CuPy finds them; where
    CuPy is not installed, its own directories are a stand-in (the sources include nothing
    from them) and the runtime headers are those of the nvidia-cuda-runtime wheel."""
    try:
        from cupy._core import core

        include = core._get_header_dir_path()
        cccl = [o[2:] for o in core._get_cccl_include_options()]
    except ImportError:
        include = str(Path(tempfile.gettempdir()) / "gpuconv-no-cupy" / "include")
        cccl = [f"{include}/cupy/_cccl/{lib}" for lib in ("cub", "thrust", "libcudacxx")]
    try:
        from cuda.pathfinder import find_nvidia_header_directory

        runtime = find_nvidia_header_directory("cudart") or "/usr/local/cuda/include"
    except ImportError:
        runtime = "/usr/local/cuda/include"
    return cccl, include, runtime


def cupy_nvrtc_options(options: tuple[str, ...], arch: str, *, cubin: bool = True,
                       device_default: bool = True) -> list[str]:
    """The options CuPy 14.2 passes to NVRTC for ``RawModule(code=..., options=options)`` on a
    device of compute capability ``arch`` (read from its source: ``assemble_cupy_compiler_options``
    in cupy/_core/core.pyx, ``_compile_with_cache_cuda`` and
    ``_compile_using_nvrtc_no_warning`` in cupy/cuda/compiler.py, with CUPY_NVRTC_USE_PCH and
    CUPY_CUDA_COMPILE_WITH_DEBUG unset): the CCCL include dirs first, the caller's options,
    ``--std=c++17`` only when they name no standard, CuPy's include dir and the CUDA runtime
    headers, ``-ftz=true``, ``-arch=sm_XX`` (a cubin; ``compute_XX``, PTX, in CuPy's PTX mode)
    and ``--device-as-default-execution-space``. The gpu test below checks this against CuPy."""
    cccl, include, runtime = _cupy_include_dirs()
    out = [f"-I{d}" for d in cccl] + list(options)
    if not any("-std=" in o for o in options):
        out.append("--std=c++17")
    out += [f"-I{include}", f"-I{runtime}", "-ftz=true",
            f"-arch={'sm' if cubin else 'compute'}_{arch}"]
    if device_default:
        out.append(DEVICE_DEFAULT)
    return out


@pytest.mark.gpu
def test_cupy_gives_nvrtc_the_options_this_file_compiles_with(monkeypatch):
    cp = pytest.importorskip("cupy")
    if "emulated" in cp.__version__:
        pytest.skip("needs the real CuPy: the emulator does not run NVRTC")
    from cupy.cuda import compiler

    seen = []
    real_compile = compiler._NVRTCProgram.compile

    def spy(self, options=(), log_stream=None):
        seen.append(list(options))
        return real_compile(self, options, log_stream)

    monkeypatch.setattr(compiler._NVRTCProgram, "compile", spy)
    options = cuda_c.nvrtc_options("pool")
    # A source text of its own, so that neither of CuPy's caches answers instead of NVRTC.
    code = (cuda_source_dir() / "pool.cu").read_text() + f"\n// {uuid.uuid4()}\n"
    cp.RawModule(code=code, options=options).compile()
    major, minor = cp.cuda.Device().compute_capability
    assert seen == [cupy_nvrtc_options(options, f"{major}{minor}")]


# --------------------------------------------------------------------------- NVRTC releases

def _nvrtc_library(root: Path) -> Path | None:
    found = sorted(p for p in root.rglob("libnvrtc.so*") if ".alt." not in p.name)
    return found[0] if found else None


def _installed_wheel(dist: str) -> Path | None:
    """The directory holding ``dist``'s files in this environment (None if not installed)."""
    try:
        files = importlib.metadata.distribution(dist).files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    libs = [f.locate() for f in files if f.name.startswith("libnvrtc.so")]
    return Path(libs[0]).parent if libs else None


def _cached_wheel(dist: str, version: str) -> Path:
    """``dist==version`` installed with pip into the cache (once); skips if pip cannot."""
    target = NVRTC_CACHE / f"{dist}-{version}"
    if _nvrtc_library(target) is not None:
        return target
    NVRTC_CACHE.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(dir=NVRTC_CACHE, prefix=".partial-"))
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile",
           "--disable-pip-version-check", "--retries", "1", "--timeout", "30",
           "--target", str(partial), f"{dist}=={version}"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0 or _nvrtc_library(partial) is None:
        shutil.rmtree(partial, ignore_errors=True)
        last = (result.stderr.strip().splitlines() or ["no libnvrtc in the wheel"])[-1]
        pytest.skip(f"cannot install {dist}=={version} into {NVRTC_CACHE}: {last}")
    try:
        partial.rename(target)
    except OSError:  # another process installed it meanwhile
        shutil.rmtree(partial, ignore_errors=True)
    return target


def _release_library(extra: str, age: str) -> tuple[str, Path]:
    """(version, libnvrtc path) of one release; skips with the reason where it is missing."""
    dist, oldest = NVRTC_WHEELS[extra]
    if age == "oldest":
        return oldest, _nvrtc_library(_cached_wheel(dist, oldest))
    where = _installed_wheel(dist)
    if where is None:
        pytest.skip(f"{dist} is not installed (the test extra: pip install -e '.[test]')")
    return importlib.metadata.version(dist), _nvrtc_library(where)


# The compiles of one NVRTC release: (unit, option set), the option sets being "sm_80",
# "sm_90" (cubins with exactly CuPy's options) and "no-default-device" (PTX without
# --device-as-default-execution-space).
def release_jobs(release) -> list[tuple[tuple, str]]:
    extra, age = release
    cubins = ("sm_80", "sm_90") if age == "newest" else ("sm_90",)
    jobs = [(unit, kind) for unit in PLAIN for kind in (*cubins, "no-default-device")]
    if release == ("cuda13", "newest"):
        jobs += [(unit, "sm_90") for unit in COVER]
    return jobs


def _job(unit, kind: str) -> dict:
    family, defines = unit
    options = cuda_c.nvrtc_options(family, defines)
    if kind == "no-default-device":
        options = cupy_nvrtc_options(options, ARCHS[0], cubin=False, device_default=False)
    else:
        options = cupy_nvrtc_options(options, kind.removeprefix("sm_"))
    return {"key": f"{unit_id(unit)}-{kind}", "options": options,
            "source": str(cuda_source_dir() / f"{family}.cu")}


def _compile_all(library: Path, release) -> dict:
    cmd = [sys.executable, __file__, str(library)]
    jobs = [_job(*job) for job in release_jobs(release)]
    result = subprocess.run(cmd, input=json.dumps(jobs), capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} -> exit {result.returncode}\n{result.stderr}")
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def nvrtc_results():
    """{release index: (version, {job key: result}) or the reason it was skipped}: every
    release compiled in parallel, once for the module."""
    def run(release):
        try:
            version, library = _release_library(*release)
        except pytest.skip.Exception as skip:
            return str(skip)
        return version, _compile_all(library, release)

    with ThreadPoolExecutor(max_workers=max(1, min(len(RELEASES), os.cpu_count() or 1))) as pool:
        return dict(enumerate(pool.map(run, RELEASES)))


def _result(nvrtc_results, release, key) -> tuple[str, dict]:
    outcome = nvrtc_results[RELEASES.index(release)]
    if isinstance(outcome, str):
        pytest.skip(outcome)
    version, results = outcome
    return version, results[key]


NVRTC_JOBS = [(release, unit, kind) for release in RELEASES
              for unit, kind in release_jobs(release)]


@pytest.mark.parametrize("job", NVRTC_JOBS, ids=[f"{'-'.join(r)}-{unit_id(u)}-{k}"
                                                 for r, u, k in NVRTC_JOBS])
def test_cuda_source_compiles_with_nvrtc_as_cupy_compiles_it(nvrtc_results, job):
    release, unit, kind = job
    version, result = _result(nvrtc_results, release, f"{unit_id(unit)}-{kind}")
    assert result["code"] == 0 and not result["log"], (
        f"NVRTC {version} on {unit[0]}.cu ({kind}) with {' '.join(result['options'])}: "
        f"code {result['code']}\n{result['log']}")
    if kind == "no-default-device":
        entries = [line.split()[-1] for line in result["ptx"].splitlines()
                   if line.startswith(".visible .entry")]
        assert entries and all("_f32" in e or "_f64" in e for e in entries), entries


# --------------------------------------------------------------------------- the loader

def test_nvrtc_options_change_with_every_header_the_source_includes(tmp_path, monkeypatch):
    for path in cuda_source_dir().iterdir():
        shutil.copy(path, tmp_path / path.name)
    monkeypatch.setattr(cuda_c, "cuda_source_dir", lambda: tmp_path)
    before = cuda_c.nvrtc_options("activation")
    with open(tmp_path / "philox.cuh", "a") as header:  # included by activation.cu only
        header.write("\n// changed\n")
    assert cuda_c.nvrtc_options("activation") != before
    assert cuda_c.nvrtc_options("pool") == cuda_c.nvrtc_options("pool")


def test_nvrtc_options_hash_headers_included_through_other_headers(tmp_path, monkeypatch):
    (tmp_path / "top.cu").write_text('#include "outer.cuh"\n')
    (tmp_path / "outer.cuh").write_text('#pragma once\n#include "inner.cuh"\n')
    (tmp_path / "inner.cuh").write_text("#pragma once\n")
    monkeypatch.setattr(cuda_c, "cuda_source_dir", lambda: tmp_path)
    before = cuda_c.nvrtc_options("top")
    (tmp_path / "inner.cuh").write_text("#pragma once\n// changed\n")
    assert cuda_c.nvrtc_options("top") != before


class _CountingCupy:
    """Just enough of CuPy for the loader: counts module builds and function look-ups."""

    def __init__(self):
        self.modules = self.lookups = 0
        self.cuda = type("cuda", (), {"Device": lambda: type("d", (), {"id": 0})()})

    def RawModule(self, code, options, **kwargs):  # noqa: N802 (CuPy's name)
        counter = self
        counter.modules += 1

        class Module:
            def get_function(self, name):
                counter.lookups += 1
                return lambda *args, **kwargs: None

        return Module()


def test_a_kernel_is_looked_up_once_per_device(monkeypatch):
    fake = _CountingCupy()
    monkeypatch.setattr(cuda_c.backend, "cupy_or_none", lambda: fake)
    cuda_c._module.cache_clear()
    cuda_c._function.cache_clear()
    try:
        for _ in range(3):
            cuda_c.launch("pool", "max_pool2d_fwd_f32", (1,), (32,), ())
    finally:
        cuda_c._module.cache_clear()
        cuda_c._function.cache_clear()
    assert (fake.modules, fake.lookups) == (1, 1)


def test_an_undeclared_define_variant_is_refused(monkeypatch):
    monkeypatch.setattr(cuda_c.backend, "cupy_or_none", lambda: _CountingCupy())
    with pytest.raises(ValueError, match="DEFINE_VARIANTS"):
        cuda_c._module("pool", 0, ("GPUCONV_UNDECLARED=1",))


# --------------------------------------------------------------------------- the worker

def _worker(library: str) -> None:
    """Compile the jobs on stdin with the NVRTC at ``library``; print the results as JSON.
    NVRTC opens its builtins library by soname, so it is loaded first, from beside it."""
    for builtins in sorted(Path(library).parent.glob("libnvrtc-builtins.so*")):
        if ".alt." not in builtins.name:
            ctypes.CDLL(str(builtins), mode=ctypes.RTLD_GLOBAL)
    nvrtc = ctypes.CDLL(library)
    results = {}
    for job in json.load(sys.stdin):
        source = Path(job["source"])
        program = ctypes.c_void_p()
        assert nvrtc.nvrtcCreateProgram(ctypes.byref(program), source.read_bytes(),
                                        source.name.encode(), 0, None, None) == 0
        argv = (ctypes.c_char_p * len(job["options"]))(*(o.encode() for o in job["options"]))
        code = nvrtc.nvrtcCompileProgram(program, len(job["options"]), argv)
        size = ctypes.c_size_t()
        nvrtc.nvrtcGetProgramLogSize(program, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        nvrtc.nvrtcGetProgramLog(program, log)
        ptx = ""
        if code == 0 and nvrtc.nvrtcGetPTXSize(program, ctypes.byref(size)) == 0:
            buffer = ctypes.create_string_buffer(size.value)
            nvrtc.nvrtcGetPTX(program, buffer)
            ptx = buffer.value.decode()
        nvrtc.nvrtcDestroyProgram(ctypes.byref(program))
        results[job["key"]] = {"code": code, "log": log.value.decode().strip(), "ptx": ptx,
                               "options": job["options"]}
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    _worker(sys.argv[1])
