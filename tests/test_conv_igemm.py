"""The implicit-GEMM convolution on tensor cores (impl ``cuda_igemm``, kernels/conv_igemm.cu).

Per precision mode (fp32 = 3xTF32, tf32, bf16, fp16) against the float64 reference
on shapes that are not multiples of any tile, misaligned and single channels, stride,
padding, dilation, groups and batch 1; every tile configuration through every pass; the
split-K weight gradient's determinism; the fused epilogues; empty batches and channels-last
arrays; and, without a GPU, the ptxas resource report of every configuration (no spills,
the occupancy each tile is designed for). The ``gpu`` tests run on a GPU, and under the CUDA
emulator where there is none (tests/test_cuda_emulated.py). The common conv tests of
tests/test_conv.py run this impl too (float32).
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from support import assert_close, rng_for
from test_conv import ConvCase

from gpuconv import backend, precision
from gpuconv._resources import cuda_source_dir
from gpuconv.backend import channels_last
from gpuconv.functional import (CONV_ACTIVATIONS, conv2d, conv2d_backward,
                                conv2d_bias_act)
from gpuconv.kernels.cuda_c import conv_igemm as ig
from gpuconv.testing import TOL_KEY

IMPL = "cuda_igemm"
MODES = tuple(ig.MODES)
needs_bf16 = pytest.mark.skipif(ig._bfloat16() is None, reason="ml_dtypes is not installed")
gpu = pytest.mark.gpu
skip_no_gpu = pytest.mark.skipif(not backend.gpu_available(), reason="no GPU (CuPy sees none)")


def _mode_params():
    return [pytest.param(m, marks=[needs_bf16] if m == "bf16" else [], id=m) for m in MODES]


def _array_dtype(mode: str):
    return np.float32 if mode in ig.FLOAT32_MODES else (
        ig._bfloat16() if mode == "bf16" else np.float16)


def _inputs(key, mode, *shapes):
    """Standard normal arrays rounded to the mode's dtype: (device arrays, float64 copies of
    the same values for the reference)."""
    rng = rng_for(key)
    dtype = _array_dtype(mode)
    low = [None if s is None else rng.standard_normal(s).astype(dtype) for s in shapes]
    ref = [None if a is None else a.astype(np.float64) for a in low]
    return [None if a is None else backend.to_device(a, "cuda") for a in low], ref


class Case(ConvCase):
    """test_conv's case (x: (n, c, h, w), weight: (k, c/groups, *kernel)) with its shapes."""

    def shapes(self):
        return ((self.n, self.c) + self.hw, (self.k, self.c // self.groups) + self.kernel,
                (self.k,))


# None of M (N*OH*OW or N*H*W), N (channels per group) or the reduction is a multiple of a
# tile; channels aligned to 16 bytes for every dtype, for none, C = 1; batch 1.
CASES = [
    Case("aligned-3x3-pad1", 2, 16, (9, 7), 24, (3, 3), 1, 1),
    Case("c5-stride2-pad1", 3, 5, (11, 10), 7, (3, 3), 2, 1),
    Case("c1-lenet-5x5-pad2", 2, 1, (12, 12), 6, (5, 5), 1, 2),
    Case("groups2-dilation2-batch1", 1, 8, (10, 9), 12, (3, 2), 1, (2, 1), 2, 2),
    Case("1x1-rows-past-two-tiles", 2, 32, (12, 11), 40, (1, 1)),
]


def _mode(mode: str):
    """The precision setting of a mode (16-bit arrays compute in their own type whatever it
    says)."""
    return precision.float32_precision(mode)


@gpu
@skip_no_gpu
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
@pytest.mark.parametrize("mode", _mode_params())
def test_forward_matches_reference_per_precision(mode, case):
    (x, w, b), (x64, w64, b64) = _inputs((case.id, mode), mode, *case.shapes())
    with _mode(mode):
        y = conv2d(x, w, b, **case.args(), impl=IMPL)
    assert y.dtype == _array_dtype(mode)
    assert_close(y, conv2d(x64, w64, b64, **case.args(), impl="reference"), TOL_KEY[mode])


@gpu
@skip_no_gpu
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
@pytest.mark.parametrize("mode", _mode_params())
def test_backward_matches_reference_per_precision(mode, case):
    x_shape, w_shape, b_shape = case.shapes()
    y_shape = conv2d(np.zeros(x_shape), np.zeros(w_shape), **case.args()).shape
    (gy, x, w, b), refs = _inputs((case.id, mode, "bwd"), mode, y_shape, x_shape, w_shape,
                                  b_shape)
    with _mode(mode):
        grads = conv2d_backward(gy, x, w, b, **case.args(), impl=IMPL)
    want = conv2d_backward(*refs, **case.args(), impl="reference")
    for name, got, ref in zip(("grad_input", "grad_weight", "grad_bias"), grads, want):
        assert got.dtype == _array_dtype(mode), name
        assert_close(got, ref, TOL_KEY[mode], name)


# --------------------------------------------------------------------------- every tile

TILE_CASE = Case("tile-sweep", 2, 16, (9, 11), 40, (3, 3), 1, 1)
SWEEP_SPLITS = 3


def _pass_inputs(case, mode):
    x_shape, w_shape, _ = case.shapes()
    y_shape = conv2d(np.zeros(x_shape), np.zeros(w_shape), **case.args()).shape
    return _inputs((case.id, mode, "passes"), mode, x_shape, w_shape, y_shape)


@gpu
@skip_no_gpu
@pytest.mark.parametrize("tile", list(ig.TILES), ids=list(ig.TILES))
@pytest.mark.parametrize("mode", [pytest.param("fp32", id="fp32"),
                                  pytest.param("bf16", id="bf16", marks=needs_bf16)])
def test_every_tile_computes_every_pass(mode, tile):
    """fprop, dgrad and wgrad (in SWEEP_SPLITS splits) with the tile forced."""
    case = TILE_CASE
    (x, w, gy), (x64, w64, gy64) = _pass_inputs(case, mode)
    geo = ig._geometry(x.shape, w.shape, (1, 1), (1, 1), (1, 1), 1)
    choice = ig.Choice(ig.TILES[tile], SWEEP_SPLITS, "test")
    with _mode(mode):
        y = ig.fprop(ig._nhwc(x), ig._krsc(w), geo, ig.mode_of(x.dtype), choice=choice)
        gx = ig.dgrad(ig._nhwc(gy), ig._krsc(w), geo, ig.mode_of(x.dtype), choice=choice)
        gw = ig.wgrad(ig._nhwc(gy), ig._nhwc(x), geo, ig.mode_of(x.dtype), choice=choice)
    ref_y = conv2d(x64, w64, **case.args(), impl="reference")
    ref_gx, ref_gw, _ = conv2d_backward(gy64, x64, w64, **case.args(), impl="reference")
    tol = TOL_KEY[mode]
    assert_close(backend.to_numpy(y).transpose(0, 3, 1, 2), ref_y, tol, "fprop")
    assert_close(backend.to_numpy(gx).transpose(0, 3, 1, 2), ref_gx, tol, "dgrad")
    assert_close(backend.to_numpy(gw).transpose(0, 3, 1, 2), ref_gw, tol, "wgrad")


@gpu
@skip_no_gpu
def test_split_k_weight_gradient_is_deterministic_and_split_independent():
    """Repeated runs give the same bits (the emulator alternates block and thread order);
    1 and 4 splits agree to float32 accuracy (different summation order)."""
    (x, w, gy), (x64, w64, gy64) = _pass_inputs(TILE_CASE, "fp32")
    geo = ig._geometry(x.shape, w.shape, (1, 1), (1, 1), (1, 1), 1)
    tile = ig.TILES["64x32"]
    runs = [backend.to_numpy(ig.wgrad(ig._nhwc(gy), ig._nhwc(x), geo, "fp32",
                                      ig.Choice(tile, splits, "test")))
            for splits in (4, 4, 4, 1)]
    assert all(np.array_equal(runs[0], r) for r in runs[1:3])
    assert_close(runs[3], runs[0].astype(np.float64), "float32")


# --------------------------------------------------------------------------- fused epilogue

FUSED_CASE = Case("fused", 2, 8, (7, 6), 12, (3, 3), 2, 1)


@gpu
@skip_no_gpu
@pytest.mark.parametrize("with_scale, with_residual", [(False, False), (True, True)],
                         ids=["bias", "scale-bias-residual"])
@pytest.mark.parametrize("activation", CONV_ACTIVATIONS)
def test_fused_epilogue_matches_the_composed_reference(activation, with_scale, with_residual):
    case = FUSED_CASE
    x_shape, w_shape, b_shape = case.shapes()
    y_shape = conv2d(np.zeros(x_shape), np.zeros(w_shape), **case.args()).shape
    (x, w, b, s, r), (x64, w64, b64, s64, r64) = _inputs(
        ("fused", activation), "fp32", x_shape, w_shape, b_shape,
        b_shape if with_scale else None, y_shape if with_residual else None)
    param = 0.2 if activation in ("leaky_relu", "elu") else 0.0
    kw = dict(activation=activation, param=param, residual=r, scale=s, **case.args())
    y = conv2d_bias_act(x, w, b, impl=IMPL, **kw)
    ref = conv2d_bias_act(x64, w64, b64, impl="reference",
                          **{**kw, "residual": r64, "scale": s64})
    assert_close(y, ref, "float32", activation)


@gpu
@skip_no_gpu
@needs_bf16
def test_fused_epilogue_in_bfloat16():
    case = FUSED_CASE
    x_shape, w_shape, b_shape = case.shapes()
    y_shape = conv2d(np.zeros(x_shape), np.zeros(w_shape), **case.args()).shape
    (x, w, b, r), (x64, w64, b64, r64) = _inputs("fused-bf16", "bf16", x_shape, w_shape,
                                                 b_shape, y_shape)
    y = conv2d_bias_act(x, w, b, residual=r, activation="relu", impl=IMPL, **case.args())
    ref = conv2d_bias_act(x64, w64, b64, residual=r64, activation="relu", impl="reference",
                          **case.args())
    assert_close(y, ref, "bfloat16")


@gpu
@skip_no_gpu
def test_strided_scale_and_bias_views_are_read_as_their_values():
    case = FUSED_CASE
    x_shape, w_shape, (k,) = case.shapes()
    (x, w, sb), (x64, w64, sb64) = _inputs("strided-bias", "fp32", x_shape, w_shape, (2, 2 * k))
    scale, bias = sb[0, ::2], sb[1, 1::2]       # every other element of a row: stride 2
    y = conv2d_bias_act(x, w, bias, scale=scale, impl=IMPL, **case.args())
    ref = conv2d_bias_act(x64, w64, sb64[1, 1::2], scale=sb64[0, ::2], impl="reference",
                          **case.args())
    assert_close(y, ref, "float32")


# --------------------------------------------------------------------------- layouts, N = 0

@gpu
@skip_no_gpu
def test_channels_last_inputs_give_channels_last_outputs():
    case = CASES[0]
    (x, w, b), (x64, w64, b64) = _inputs("channels-last", "fp32", *case.shapes())
    xl, wl = channels_last(x), channels_last(w)
    y = conv2d(xl, wl, b, **case.args(), impl=IMPL)
    assert y.transpose(0, 2, 3, 1).flags.c_contiguous
    assert_close(y, conv2d(x64, w64, b64, **case.args(), impl="reference"), "float32")
    gx, gw, _ = conv2d_backward(y, xl, wl, b, **case.args(), impl=IMPL)
    assert gx.transpose(0, 2, 3, 1).flags.c_contiguous
    assert gw.transpose(0, 2, 3, 1).flags.c_contiguous


@gpu
@skip_no_gpu
def test_empty_batch_gives_empty_output_and_zero_gradients():
    (x, w, b), _ = _inputs("empty", "fp32", (0, 4, 6, 6), (8, 4, 3, 3), (8,))
    y = conv2d(x, w, b, padding=1, impl=IMPL)
    assert y.shape == (0, 8, 6, 6)
    gx, gw, gb = conv2d_backward(y, x, w, b, padding=1, impl=IMPL)
    assert gx.shape == x.shape
    assert not np.any(backend.to_numpy(gw)) and not np.any(backend.to_numpy(gb))


@gpu
@skip_no_gpu
def test_backward_without_grad_input_gives_the_same_parameter_gradients():
    """fit's first layer (output_mask (False, True, True)): no grad_input, and the weight
    and bias gradients of the full backward."""
    case = CASES[0]
    (x, w, b), _ = _inputs("mask", "fp32", *case.shapes())
    gy = conv2d(x, w, b, **case.args(), impl=IMPL)
    full = conv2d_backward(gy, x, w, b, **case.args(), impl=IMPL)
    masked = conv2d_backward(gy, x, w, b, **case.args(), output_mask=(False, True, True),
                             impl=IMPL)
    assert masked[0] is None
    for got, want in zip(masked[1:], full[1:]):
        np.testing.assert_array_equal(backend.to_numpy(got), backend.to_numpy(want))


# --------------------------------------------------------------------------- nn layers

def _conv_act_model(activation):
    from gpuconv import nn
    nn.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), activation, nn.Conv2d(8, 4, 3, stride=2))


@gpu
@skip_no_gpu
@pytest.mark.parametrize("make_activation", ["ReLU", "LeakyReLU", "Sigmoid", "Tanh"])
def test_sequential_fuses_conv_and_activation_on_the_gpu(make_activation, monkeypatch):
    """Conv2d + activation runs as one conv2d_bias_act call; forward, input gradient and
    parameter gradients match the same model run unfused on the CPU."""
    from gpuconv import functional as F, nn
    calls = []
    fused_op = F.conv2d_bias_act
    monkeypatch.setattr(F, "conv2d_bias_act", lambda *a, **k: calls.append(k) or fused_op(*a, **k))
    cpu, gpu_model = (_conv_act_model(getattr(nn, make_activation)()) for _ in range(2))
    cpu[0].fused_activation = lambda *a: None   # the oracle runs the layers unfused
    gpu_model.to("cuda")
    x = rng_for("nn-fused").standard_normal((2, 3, 9, 8)).astype(np.float32)
    gy = rng_for("nn-fused-gy").standard_normal((2, 4, 4, 3)).astype(np.float32)
    want_y, want_gx = cpu(x), cpu.backward(gy)
    got_y = gpu_model(backend.to_device(x, "cuda"))
    got_gx = gpu_model.backward(backend.to_device(gy, "cuda"))
    assert len(calls) == 1
    assert_close(got_y, want_y.astype(np.float64), "float32", "output")
    assert_close(got_gx, want_gx.astype(np.float64), "float32", "grad_input")
    for (name, p), (_, q) in zip(gpu_model.named_parameters(), cpu.named_parameters()):
        assert_close(p.grad, q.grad.astype(np.float64), "float32", name)


# --------------------------------------------------------------------------- no GPU needed

@pytest.mark.parametrize("setting, mode", [("fp32", "fp32"), ("tf32", "tf32"),
                                           ("bf16", "tf32"), ("fp16", "tf32")])
def test_float32_arrays_run_the_setting_or_the_nearest_more_accurate_mode(setting, mode):
    with precision.float32_precision(setting):
        assert ig.mode_of(np.float32) == mode
        assert ig.mode_of(np.float16) == "fp16"
    assert ig.mode_of(np.float32) == "fp32"


def _problem(pass_, n, c, hw, k, kernel, groups=1, mode="fp32"):
    return ig._geometry((n, c) + hw, (k, c // groups) + kernel, (1, 1), (0, 0), (1, 1),
                        groups).problem(pass_, mode)


def test_heuristic_fits_narrow_tiles_to_few_channels_and_splits_long_wgrad_reductions():
    lenet = _problem("fprop", 256, 6, (14, 14), 16, (5, 5))
    assert ig.heuristic(lenet, sm_count=132).tile.bn == 32
    big = _problem("fprop", 64, 128, (28, 28), 128, (3, 3))
    assert ig.heuristic(big, sm_count=132).tile.name == "128x128"
    wgrad = _problem("wgrad", 64, 64, (56, 56), 64, (3, 3))
    choice = ig.heuristic(wgrad, sm_count=132)
    assert choice.splits > 1 and choice.source == "heuristic"
    k_tiles = -(-wgrad.gemm[2] // choice.tile.bk(4))
    assert k_tiles // choice.splits >= ig.MIN_TILES_PER_SPLIT


def test_tuning_table_entry_wins_over_the_heuristic(tmp_path, monkeypatch):
    problem = _problem("fprop", 8, 32, (16, 16), 64, (3, 3))
    table = tmp_path / "table.json"
    table.write_text('{"devices": {"Test GPU": {"%s": {"tile": "64x32", "splits": 1}}}}'
                     % problem.key())
    monkeypatch.setattr(ig, "TABLE", table)
    monkeypatch.setattr(ig, "_device", lambda: ("Test GPU", 132))
    assert ig.choose(problem) == ig.Choice(ig.TILES["64x32"], 1, "table")
    other = _problem("fprop", 8, 32, (16, 16), 64, (5, 5))
    assert ig.choose(other).source == "heuristic"
    monkeypatch.setattr(ig, "_device", lambda: ("Other GPU", 132))
    assert ig.choose(problem).source == "heuristic"


def test_committed_tuning_table_names_only_known_tiles():
    for device, entries in ig.load_table(str(ig.TABLE)).items():
        for key, entry in entries.items():
            assert entry["tile"] in ig.TILES, (device, key)
            assert entry["splits"] >= 1


# --------------------------------------------------------------------------- gpuconv tune

@gpu
@skip_no_gpu
def test_tune_times_every_candidate_and_writes_the_winners(tmp_path):
    """Every pass of a given shape gets an entry naming a known tile, with the time of each
    candidate it compared."""
    from gpuconv.benchmark import tune
    table = tmp_path / "table.json"
    shape = tune.parse_shape("2,8,6,6,8,3,3,1,1")
    entries = tune.run(None, ["fp32"], [shape], table, quick=True, log=lambda line: None)
    assert len(entries) == 3
    device = ig._device()[0]
    written = ig.load_table(str(table))[device]
    assert written == json.loads(json.dumps(entries))
    for entry in written.values():
        assert entry["tile"] in ig.TILES and entry["median_ms"] > 0
        assert f"{entry['tile']}/split{entry['splits']}" in entry["candidates_ms"]


def test_tune_refuses_bad_shapes_and_runs_only_on_a_gpu(capsys):
    from gpuconv import cli
    from gpuconv.benchmark import tune
    with pytest.raises(ValueError, match="--shape must be N,C,H,W,K,R,S,stride,pad"):
        tune.parse_shape("1,2,3")
    with pytest.raises(ValueError, match="sizes and stride must be positive"):
        tune.parse_shape("1,2,3,3,4,0,3,1,0")
    if not backend.gpu_available():
        assert cli.main(["tune"]) == 1
        assert "CuPy sees none" in capsys.readouterr().err


def test_tune_candidates_split_only_wgrad():
    problem = _problem("wgrad", 4, 16, (8, 8), 16, (3, 3))
    from gpuconv.benchmark.tune import candidates
    splits = {c.splits for c in candidates(problem)}
    assert 1 in splits and max(splits) > 1
    fprop = _problem("fprop", 4, 16, (8, 8), 16, (3, 3))
    assert {c.splits for c in candidates(fprop)} == {1}
    assert {c.tile for c in candidates(fprop)} == set(ig.TILES.values())


# --------------------------------------------------------------------------- ptxas reports

NVCC = shutil.which("nvcc")
ARCHS = {"sm_80": {"smem_per_sm": 167936, "smem_per_block": 166912},
         "sm_90": {"smem_per_sm": 233472, "smem_per_block": 232448}}
REGISTERS_PER_SM = 65536
# Shared memory the driver reserves per resident block (sm_80 and sm_90).
RESERVED_SMEM_PER_BLOCK = 1024
VARIANTS = [(tile, mode, vec) for tile in ig.TILES for mode in MODES for vec in ("wide", "one")]
_REPORT = re.compile(r"Compiling entry function '(\w+)' for '(sm_\d+)'.*?"
                     r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill "
                     r"loads.*?Used (\d+) registers", re.S)


def _variant_defines(tile: str, mode: str, vec: str) -> tuple:
    itemsize = ig.itemsize_of(mode)
    width = 16 // itemsize if vec == "wide" else 1
    return ig.defines(mode, ig.TILES[tile], width, width, itemsize)


def _ptxas_report(defines: tuple) -> dict:
    """{(entry, arch): (stack, spill stores, spill loads, registers)} of one variant, cached
    on disk by the sources, the nvcc version and the options."""
    sources = [cuda_source_dir() / "conv_igemm.cu", cuda_source_dir() / "mma.cuh"]
    version = subprocess.run([NVCC, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256("\0".join([version, *defines, *(s.read_text() for s in sources)])
                         .encode()).hexdigest()[:20]
    cache = Path(tempfile.gettempdir()) / "gpuconv-ptxas" / f"{key}.txt"
    if not cache.exists():
        with tempfile.TemporaryDirectory() as tmp:
            ptx = Path(tmp) / "k.ptx"
            cmd = [NVCC, "-std=c++17", "-arch=compute_80", "--ptx", f"-I{cuda_source_dir()}",
                   *(f"-D{d}" for d in defines), "-o", str(ptx), str(sources[0])]
            subprocess.run(cmd, check=True, capture_output=True)
            log = ""
            for arch in ARCHS:
                out = subprocess.run(["ptxas", f"-arch={arch}", "-v", str(ptx), "-o",
                                      str(Path(tmp) / f"{arch}.cubin")],
                                     check=True, capture_output=True, text=True)
                log += out.stderr
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(log)
    return {(m[0], m[1]): tuple(int(v) for v in m[2:]) for m in _REPORT.findall(cache.read_text())}


@pytest.fixture(scope="module")
def ptxas_reports():
    """Every variant compiled once, two at a time (the machine has two cores)."""
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        reports = pool.map(lambda v: _ptxas_report(_variant_defines(*v)), VARIANTS)
        return dict(zip(VARIANTS, reports))


@pytest.mark.skipif(NVCC is None or shutil.which("ptxas") is None, reason="nvcc/ptxas missing")
@pytest.mark.parametrize("tile, mode, vec", VARIANTS, ids=["-".join(v) for v in VARIANTS])
def test_ptxas_resources_of_every_configuration(ptxas_reports, tile, mode, vec):
    """No local memory (spills or stack) and, on sm_80 and sm_90, registers and shared
    memory that let the tile's designed number of blocks share an SM."""
    t = ig.TILES[tile]
    itemsize = ig.itemsize_of(mode)
    report = ptxas_reports[(tile, mode, vec)]
    suffix = ig.MODES[mode][1]
    for pass_, entry in (("fprop", "conv2d_fwd_igemm"), ("dgrad", "conv2d_dgrad_igemm"),
                         ("wgrad", "conv2d_wgrad_igemm")):
        smem = ig.smem_bytes(t, pass_, itemsize)
        for arch, limits in ARCHS.items():
            stack, spill_st, spill_ld, regs = report[(f"{entry}_{suffix}", arch)]
            where = f"{entry}_{suffix} {arch}: {regs} registers, {smem} B shared"
            assert stack == spill_st == spill_ld == 0, f"{where}: local memory {report}"
            assert regs * t.threads * t.min_blocks <= REGISTERS_PER_SM, where
            assert smem <= limits["smem_per_block"], where
            assert t.min_blocks * (smem + RESERVED_SMEM_PER_BLOCK) <= limits["smem_per_sm"], where
