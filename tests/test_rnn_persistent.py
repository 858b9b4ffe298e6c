"""The fused recurrent kernels (kernels/rnn_persistent.cu and kernels/rnn_persistent_mma.cu
through gpuconv/kernels/cuda_c/rnn_persistent.py): the persistent LSTM/GRU sequences on
tensor cores and on the CUDA cores, their per-step fallback and the one-launch cells, against
the float64 reference, per precision; the rules that choose between them; ptxas's resource
report of every persistent kernel; and the CUDA emulator's cooperative mode that runs them
without a GPU.

The tests marked ``gpu`` run on a GPU, and without one in tests/test_cuda_emulated.py, where
every block of a cooperative launch runs at once on the CPU. ``BLOCKS_PER_DIRECTION`` splits
the small hidden sizes over a few blocks so that the partitions do not divide H, a block
holds several units, and threads hold several batch rows; the tensor-core kernels' cases
also cover batches that are not multiples of 16, slices of more than four n-tiles, several
rounds of the batch and staging rings that wrap.
"""
from __future__ import annotations

import importlib
import re
import shutil

import numpy as np
import pytest
from support import assert_close, check_against_reference, on_device_of, rng_for

from gpuconv import backend, kernels, models
from gpuconv._resources import cuda_source_dir
from gpuconv.kernels import numba_cuda
from gpuconv.kernels.cuda_c import rnn_persistent as R
from gpuconv.precision import PRECISIONS, float32_precision
from gpuconv.testing import TOL_KEY
from cuda_emu import occupancy

# The module (the package's name `rnn` is the function).
F = importlib.import_module("gpuconv.functional.rnn")

# How the sequence tests run: cuda_persistent as the plan chooses (the tensor-core kernels
# for float32 where they fit), cuda_persistent with the FMA kernels forced, the per-step
# fallback. float64 always runs the FMA kernels, so it skips the forced path.
PATHS = ("cuda_persistent", "cuda_persistent-fma", "cuda_fused")
KINDS = ("lstm", "gru")
GATES = {"lstm": 4, "gru": 3}
GPU = [pytest.mark.gpu,
       pytest.mark.skipif(not backend.gpu_available(), reason="needs a GPU with CuPy (or the "
                          "CUDA emulator: tests/test_cuda_emulated.py)")]


def gpu_param(*values, id):
    return pytest.param(*values, marks=GPU, id=id)


def flat(result) -> list:
    if isinstance(result, (tuple, list)):
        return [a for r in result for a in flat(r)]
    return [result]


# --------------------------------------------------------------------------- inputs

def seq_inputs(kind, c, rng):
    """(x, hx, params, grads of (out, h_n[, c_n])) in float64, torch-sized weights."""
    G, D, H = GATES[kind], 2 if c["bidirectional"] else 1, c["H"]
    T, B = c["T"], c["B"]
    bound = 1 / np.sqrt(H)
    x = rng.standard_normal((B, T, c["I"]) if c.get("batch_first") else (T, B, c["I"]))
    states = [rng.standard_normal((c["L"] * D, B, H)) for _ in range(2 if kind == "lstm" else 1)]
    params = []
    for layer in range(c["L"]):
        for _ in range(D):
            params += [rng.uniform(-bound, bound, (G * H, c["I"] if layer == 0 else D * H)),
                       rng.uniform(-bound, bound, (G * H, H))]
            if c.get("bias", True):
                params += [rng.uniform(-bound, bound, G * H) for _ in range(2)]
    out_shape = (B, T, D * H) if c.get("batch_first") else (T, B, D * H)
    grads = [rng.standard_normal(out_shape)] + [rng.standard_normal(s.shape) for s in states]
    return x, (tuple(states) if kind == "lstm" else states[0]), params, grads


def seq_kwargs(c) -> dict:
    kw = dict(num_layers=c["L"], bidirectional=c["bidirectional"],
              batch_first=c.get("batch_first", False))
    if c.get("dropout"):
        kw.update(dropout=c["dropout"], training=True, seed=3)
    return kw


def to_gpu(impl, op, a, dtype):
    if isinstance(a, (tuple, list)):
        return type(a)(to_gpu(impl, op, e, dtype) for e in a)
    return on_device_of(impl, op, a.astype(dtype))


def forward(kind, impl, x, hx, params, kw):
    fn = F.lstm if kind == "lstm" else F.gru
    return flat(fn(x, hx, params, impl=impl, **kw))


def backward(kind, impl, grads, x, hx, params, kw):
    fn = F.lstm_backward if kind == "lstm" else F.gru_backward
    return flat(fn(*grads, x, hx, params, impl=impl, **kw))


# Sequence cases: each sets BLOCKS_PER_DIRECTION (None: one unit per block on these sizes).
SEQ_CASES = [
    pytest.param(dict(T=3, B=2, I=4, H=7, L=1, bidirectional=False, blocks=3),
                 id="H7-in-blocks-of-3-3-1"),
    pytest.param(dict(T=1, B=1, I=3, H=5, L=1, bidirectional=True, blocks=2), id="T1-B1-bidir"),
    pytest.param(dict(T=4, B=3, I=2, H=6, L=2, bidirectional=True, batch_first=True,
                      bias=False, blocks=4), id="stacked-bidir-batch_first-nobias"),
    pytest.param(dict(T=3, B=2, I=3, H=4, L=3, bidirectional=False, dropout=0.3, blocks=None),
                 id="L3-dropout"),
    pytest.param(dict(T=2, B=65, I=33, H=40, L=1, bidirectional=False, blocks=5, chunk=32),
                 id="two-batch-tiles-two-rows-per-thread-chunks-of-32"),
    pytest.param(dict(T=2, B=50, I=2, H=40, L=1, bidirectional=False, blocks=1),
                 id="one-block-eight-rows-per-thread"),
    # tensor cores: 44 (LSTM) / 33 (GRU) gate columns per block, 1 x 8 fragments per warp
    pytest.param(dict(T=2, B=17, I=5, H=22, L=1, bidirectional=False, blocks=2),
                 id="B17-more-than-four-n-tiles"),
    # tensor cores: two rounds of the batch, each warp's ring of staged A wraps around
    pytest.param(dict(T=2, B=130, I=3, H=80, L=1, bidirectional=False, blocks=5),
                 id="B130-two-rounds-rings-wrap"),
    pytest.param(dict(T=2, B=20, I=3, H=72, L=2, bidirectional=True, blocks=8),
                 id="B20-stacked-bidir-long-backward-reduction"),
]


@pytest.fixture
def blocks(monkeypatch):
    def set_blocks(n, chunk=None, path="cuda_persistent"):
        monkeypatch.setattr(R, "BLOCKS_PER_DIRECTION", n)
        monkeypatch.setattr(R, "PERSISTENT_CHUNK", chunk)
        monkeypatch.setattr(R, "PERSISTENT_KERNELS", "fma" if path.endswith("-fma") else None)
        return path.removesuffix("-fma")
    return set_blocks


def seq_params(with_dtype: bool = True) -> list:
    dtypes = ("float64", "float32") if with_dtype else (None,)
    return [gpu_param(kind, path, dtype, id=f"{kind}-{path}" + (f"-{dtype}" if dtype else ""))
            for kind in KINDS for path in PATHS for dtype in dtypes
            if not (dtype == "float64" and path.endswith("-fma"))]


# --------------------------------------------------------------------------- sequences

@pytest.mark.parametrize("c", SEQ_CASES)
@pytest.mark.parametrize("kind,path,dtype", seq_params())
def test_sequence_forward_matches_reference(kind, path, dtype, c, blocks):
    impl = blocks(c["blocks"], c.get("chunk"), path)
    x, hx, params, _ = seq_inputs(kind, c, rng_for("fwd", kind, c))
    kw = seq_kwargs(c)
    ref = forward(kind, "reference", x, hx, params, kw)
    out = forward(kind, impl, *(to_gpu(impl, kind, a, dtype) for a in (x, hx, params)), kw)
    for j, (o, r) in enumerate(zip(out, ref, strict=True)):
        check_against_reference(o, r, dtype, f"{kind} {impl}[{j}]")


@pytest.mark.parametrize("c", SEQ_CASES)
@pytest.mark.parametrize("kind,path,dtype", seq_params())
def test_sequence_backward_matches_reference(kind, path, dtype, c, blocks):
    impl = blocks(c["blocks"], c.get("chunk"), path)
    x, hx, params, grads = seq_inputs(kind, c, rng_for("bwd", kind, c))
    kw = seq_kwargs(c)
    ref = backward(kind, "reference", grads, x, hx, params, kw)
    op = f"{kind}_backward"
    out = backward(kind, impl, *(to_gpu(impl, op, a, dtype) for a in (grads, x, hx, params)),
                   kw)
    for j, (o, r) in enumerate(zip(out, ref, strict=True)):
        check_against_reference(o, r, dtype, f"{op} {impl}[{j}]")


PRECISION_CASE = dict(T=4, B=3, I=5, H=9, L=2, bidirectional=True, blocks=2)


@pytest.mark.parametrize("mode", PRECISIONS)
@pytest.mark.parametrize("kind,path,_", seq_params(with_dtype=False))
def test_each_precision_is_within_its_tolerance(kind, path, _, mode, blocks):
    """float32 arrays in every precision, forward and backward, against float64."""
    impl = blocks(PRECISION_CASE["blocks"], path=path)
    x, hx, params, grads = seq_inputs(kind, PRECISION_CASE, rng_for("precision", kind))
    kw = seq_kwargs(PRECISION_CASE)
    refs = (forward(kind, "reference", x, hx, params, kw) +
            backward(kind, "reference", grads, x, hx, params, kw))
    args = [to_gpu(impl, kind, a, "float32") for a in (grads, x, hx, params)]
    with float32_precision(mode):
        outs = forward(kind, impl, *args[1:], kw) + backward(kind, impl, *args, kw)
    for j, (o, r) in enumerate(zip(outs, refs, strict=True)):
        assert_close(o, r, TOL_KEY[mode], f"{kind} {impl} {mode}[{j}]")


def test_float32_arrays_follow_the_setting_and_float64_keeps_its_own():
    with float32_precision("bf16"):
        assert (R.precision_of(np.float32), R.precision_of(np.float64)) == ("bf16", "fp64")
    assert R.precision_of(np.float32) == "fp32"


@pytest.mark.parametrize("kind,path,_", seq_params(with_dtype=False))
def test_the_reduced_precisions_round_the_weights(kind, path, _, blocks):
    """bf16 differs from fp32 by more than fp32's own error: the mode is really applied."""
    impl = blocks(2, path=path)
    x, hx, params, _ = seq_inputs(kind, PRECISION_CASE, rng_for("rounded", kind))
    kw = seq_kwargs(PRECISION_CASE)
    args = [to_gpu(impl, kind, a, "float32") for a in (x, hx, params)]
    exact = forward(kind, impl, *args, kw)[0]
    with float32_precision("bf16"):
        rounded = forward(kind, impl, *args, kw)[0]
    diff = np.abs(backend.to_numpy(exact) - backend.to_numpy(rounded)).max()
    assert diff > 1e-4, f"bf16 output equals fp32 output to {diff:.1e}"


@pytest.mark.parametrize("kind,impl", [gpu_param(k, i, id=f"{k}-{i}") for k in KINDS
                                       for i in ("cuda_persistent", "cuda_fused")])
def test_an_empty_batch_gives_empty_results_without_a_launch(kind, impl):
    """N = 0 straight to the impl (the public op refuses an empty input until it learns
    PyTorch's empty-batch semantics)."""
    T, I, H, D = 3, 2, 4, 2
    G = GATES[kind]
    xp = backend.array_module(on_device_of(impl, kind, np.zeros(1)))
    params = [xp.ones(s) for _ in range(D) for s in ((G * H, I), (G * H, H), (G * H,), (G * H,))]
    x = xp.zeros((T, 0, I))
    states = [xp.zeros((D, 0, H)) for _ in range(2 if kind == "lstm" else 1)]
    fwd = kernels.implementations(kind)
    fn = next(i.fn for i in fwd if i.name == impl)
    saved = []
    out = fn(x, *states, params, 1, True, None, saved)
    assert [tuple(a.shape) for a in flat(out)] == [(T, 0, D * H)] + [(D, 0, H)] * len(states)
    bwd = next(i.fn for i in kernels.implementations(f"{kind}_backward") if i.name == impl)
    grads = bwd(xp.zeros((T, 0, D * H)), *states, x, *states, params, 1, True, None, saved)
    shapes = [tuple(a.shape) for a in flat(grads)]
    assert shapes == [(T, 0, I)] + [(D, 0, H)] * len(states) + [tuple(p.shape) for p in params]
    assert all(float(abs(g).sum()) == 0 for g in flat(grads)[1 + len(states):])


# --------------------------------------------------------------------------- cells

CELL_CASES = [pytest.param(3, 5, 4, "both", id="B3-I5-H4"),
              pytest.param(1, 1, 1, "none", id="B1-I1-H1-nobias"),
              pytest.param(2, 40, 7, "ih", id="B2-I40-H7-two-chunks-bias_ih"),
              pytest.param(66, 3, 9, "hh", id="B66-two-batch-tiles-bias_hh")]


def cell_args(kind, B, I, H, biases, rng) -> list:
    G = GATES[kind]
    states = [rng.standard_normal((B, H)) for _ in range(2 if kind == "lstm" else 1)]
    bias = [rng.uniform(-0.5, 0.5, G * H) if biases in ("both", which) else None
            for which in ("ih", "hh")]
    return [rng.standard_normal((B, I)), *states, rng.uniform(-0.8, 0.8, (G * H, I)),
            rng.uniform(-0.8, 0.8, (G * H, H)), *bias]


def packed(kind, args) -> list:
    """Flat cell arguments in PyTorch's call form: the LSTM takes its state as a pair."""
    return [args[0], (args[1], args[2]), *args[3:]] if kind == "lstm" else list(args)


@pytest.mark.parametrize("B,I,H,biases", CELL_CASES)
@pytest.mark.parametrize("kind,dtype", [gpu_param(k, d, id=f"{k}-{d}") for k in KINDS
                                        for d in ("float64", "float32")])
def test_cell_in_one_launch_matches_reference(kind, dtype, B, I, H, biases, blocks):
    blocks(3)
    op = f"{kind}_cell"
    args = cell_args(kind, B, I, H, biases, rng_for("cell", kind, B, I, H))
    cell = F.lstm_cell if kind == "lstm" else F.gru_cell
    ref = flat(cell(*packed(kind, args), impl="reference"))
    on_gpu = [None if a is None else to_gpu("cuda_fused", op, a, dtype) for a in args]
    out = flat(cell(*packed(kind, on_gpu), impl="cuda_fused"))
    for j, (o, r) in enumerate(zip(out, ref, strict=True)):
        check_against_reference(o, r, dtype, f"{op}[{j}]")


@pytest.mark.parametrize("kind", [gpu_param(k, id=k) for k in KINDS])
def test_a_cell_is_one_launch(kind, monkeypatch):
    launches = []
    run = R._run
    monkeypatch.setattr(R, "_run", lambda *a, **k: launches.append(a[0]) or run(*a, **k))
    args = cell_args(kind, 2, 3, 4, "both", rng_for("one launch", kind))
    cell = F.lstm_cell if kind == "lstm" else F.gru_cell
    cell(*packed(kind, [on_device_of("cuda_fused", f"{kind}_cell", a) for a in args]),
         impl="cuda_fused")
    assert launches == [f"{kind}_cell_fwd_f64"]


# --------------------------------------------------------------------------- the choice

def classifier_shapes(kind):
    """What the MNIST-1D classifier's recurrent layer passes (T=40, batch 128, hidden 64)."""
    return dict(T=40, B=128, I=1, H=64, L=1, bidirectional=False)


@pytest.mark.parametrize("kind", [gpu_param(k, id=k) for k in KINDS])
def test_the_persistent_impl_is_chosen_where_it_fits(kind):
    x, hx, params, _ = seq_inputs(kind, classifier_shapes(kind), rng_for("choice", kind))
    seq = F._prepare(kind, kind, *(to_gpu("cuda_persistent", kind, a, "float32")
                                   for a in (x, hx, params)), 1, False, False, 0.0, False, 0)
    args = (seq.x, *seq.states, seq.params, 1, False, None, None)
    assert kernels.select(kind, None, seq.x, args).name == "cuda_persistent"


@pytest.mark.parametrize("kind", [gpu_param(k, id=k) for k in KINDS])
def test_weights_too_big_for_the_chip_fall_back_to_the_fused_steps(kind, blocks):
    blocks(1)  # one block per direction would hold all of W_hh: G*200*200*4 bytes do not fit
    c = dict(T=2, B=1, I=1, H=200, L=1, bidirectional=False)
    x, hx, params, _ = seq_inputs(kind, c, rng_for("fallback", kind))
    gpu = [to_gpu("cuda_fused", kind, a, "float32") for a in (x, hx, params)]
    seq = F._prepare(kind, kind, *gpu, 1, False, False, 0.0, False, 0)
    args = (seq.x, *seq.states, seq.params, 1, False, None, None)
    assert kernels.select(kind, None, seq.x, args).name == "cuda_fused"
    with pytest.raises(ValueError, match=r"cannot hold hidden size 200 .* shared memory"):
        forward(kind, "cuda_persistent", *gpu, seq_kwargs(c))
    for o, r in zip(forward(kind, None, *gpu, seq_kwargs(c)),
                    forward(kind, "reference", x, hx, params, seq_kwargs(c)), strict=True):
        assert_close(o, r, "float32", f"{kind} fallback")


# (case, dtype, forced kernels) -> the persistent entry points that run its forward
KERNEL_CHOICES = [
    pytest.param(dict(T=2, B=3, I=2, H=9, L=1, bidirectional=True, blocks=2), "float32", None,
                 "{kind}_fwd_persistent_mma_f32", id="float32-tensor-cores"),
    pytest.param(dict(T=2, B=3, I=2, H=9, L=1, bidirectional=True, blocks=2), "float64", None,
                 "{kind}_fwd_persistent_f64", id="float64-fma"),
    # 40 units in one block: 160 / 120 gate columns, more than the tensor cores' 64
    pytest.param(dict(T=2, B=3, I=2, H=40, L=1, bidirectional=False, blocks=1), "float32",
                 None, "{kind}_fwd_persistent_f32", id="too-many-columns-for-tensor-cores-fma"),
    pytest.param(dict(T=2, B=3, I=2, H=9, L=1, bidirectional=False, blocks=2), "float32",
                 "fma", "{kind}_fwd_persistent_f32", id="fma-forced"),
]


@pytest.mark.parametrize("c,dtype,forced,entry", KERNEL_CHOICES)
@pytest.mark.parametrize("kind", [gpu_param(k, id=k) for k in KINDS])
def test_the_tensor_core_kernels_run_float32_where_they_fit(kind, c, dtype, forced, entry,
                                                            blocks, monkeypatch):
    blocks(c["blocks"], path="cuda_persistent-fma" if forced else "cuda_persistent")
    launches = []
    run = R._run
    monkeypatch.setattr(R, "_run", lambda *a, **k: launches.append(a[0]) or run(*a, **k))
    x, hx, params, _ = seq_inputs(kind, c, rng_for("kernels", kind))
    forward(kind, "cuda_persistent", *(to_gpu("cuda_persistent", kind, a, dtype)
                                       for a in (x, hx, params)), seq_kwargs(c))
    assert launches == [entry.format(kind=kind)]


@pytest.mark.parametrize("kind", [gpu_param(k, id=k) for k in KINDS])
def test_forcing_the_tensor_core_kernels_on_float64_says_why_not(kind, monkeypatch):
    monkeypatch.setattr(R, "PERSISTENT_KERNELS", "mma")
    c = dict(T=2, B=1, I=1, H=4, L=1, bidirectional=False)
    x, hx, params, _ = seq_inputs(kind, c, rng_for("mma float64", kind))
    with pytest.raises(ValueError, match="tensor cores: they need float32 arrays and sm_80"):
        forward(kind, "cuda_persistent", *(to_gpu("cuda_persistent", kind, a, "float64")
                                           for a in (x, hx, params)), seq_kwargs(c))


@pytest.mark.gpu
def test_the_choice_is_made_for_the_layers_without_code_changes(monkeypatch):
    """nn.LSTM in a classifier on a GPU runs the persistent kernels, forward and backward."""
    if not backend.gpu_available():
        pytest.skip("needs a GPU with CuPy (or the CUDA emulator)")
    calls = []
    for name in ("_sequence_forward", "_sequence_backward"):
        fn = getattr(R, name)
        monkeypatch.setattr(R, name, lambda *a, _fn=fn, _n=name: calls.append((_n, a[1]))
                            or _fn(*a))
    model = models.lstm_classifier(hidden_size=6).to("cuda")
    x = backend.to_device(rng_for("layers").standard_normal((4, 1, 5)).astype(np.float32),
                          "cuda")
    logits = model(x)
    model.backward(backend.array_module(logits).ones_like(logits))
    assert calls == [("_sequence_forward", True), ("_sequence_backward", True)]


# --------------------------------------------------------------------------- launch facts

def test_the_launcher_constants_are_the_kernel_file_defines():
    source = (cuda_source_dir() / "rnn_persistent.cu").read_text()
    defines = dict(re.findall(r"#define (RNN_\w+) \(?(\w+)", source))
    assert int(defines["RNN_K_CHUNK"]) == R.K_CHUNK
    assert int(defines["RNN_BATCH_TILE"]) == R.BATCH_TILE
    assert int(defines["RNN_MAX_THREADS"]) == R.MAX_THREADS
    assert "RNN_TILE_STRIDE (RNN_BATCH_TILE + 1)" in source and R.TILE_STRIDE == R.BATCH_TILE + 1
    mma = (cuda_source_dir() / "rnn_persistent_mma.cu").read_text()
    defines = dict(re.findall(r"#define (RNN_MMA_\w+) (.+)", mma))
    assert int(defines["RNN_MMA_WARPS"]) == R.MMA_WARPS
    assert defines["RNN_MMA_THREADS"] == "(RNN_MMA_WARPS * 32)" and R.MMA_THREADS == 32 * R.MMA_WARPS
    assert int(defines["RNN_MMA_KSTEP"]) == R.MMA_KSTEP
    assert int(defines["RNN_MMA_MAX_NTILES"]) == R.MMA_MAX_NTILES
    slot = 16 * R.MMA_KSTEP * 4  # RNN_MMA_SLOT_BYTES: 16 rows of a k-step in fp32
    assert defines["RNN_MMA_SLOT_BYTES"] == "(16 * RNN_MMA_KSTEP * 4)"
    assert defines["RNN_MMA_WARP_BYTES"] == "(RNN_MMA_SLOTS * RNN_MMA_SLOT_BYTES)"
    assert int(defines["RNN_MMA_SLOTS"]) * slot == R.MMA_WARP_BYTES
    assert f"make_part(n.H, n.units, n.units, {R.MMA_BWD_MAX_NTILES})" in mma


def test_the_docstring_table_of_on_chip_limits_is_what_the_plan_computes():
    rows = {"mma fp32, tf32": (4, 4), "mma bf16, fp16": (2, 4), "fma fp32, tf32": (4, 4),
            "fma bf16, fp16": (2, 4), "fma float64": (8, 8)}
    gpus = [(132, 227 * 1024), (108, 163 * 1024)]  # H100, A100: SMs, shared memory per block
    for label, (weight, item) in rows.items():
        line = next(ln for ln in R.__doc__.splitlines() if ln.startswith(label))
        printed = [int(v) for v in re.findall(r"\d+", line[len(label):])]
        computed = [R.max_persistent_hidden(kind, D, weight, item, sms, smem, label[:3])
                    for sms, smem in gpus for kind in KINDS for D in (1, 2)]
        lstm_h100, gru_h100, lstm_a100, gru_a100 = (computed[i:i + 2] for i in range(0, 8, 2))
        assert printed == lstm_h100 + gru_h100 + lstm_a100 + gru_a100, label


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
@pytest.mark.parametrize("source,threads", [("rnn_persistent.cu", R.MAX_THREADS),
                                            ("rnn_persistent_mma.cu", R.MMA_THREADS)])
@pytest.mark.parametrize("gpu", sorted(occupancy.GPUS))
def test_every_persistent_kernel_is_resident_one_block_per_sm_without_spills(
        gpu, source, threads, monkeypatch):
    """ptxas's registers and shared memory let one block of the launcher's (largest) block
    size with the largest dynamic shared memory run on every SM, and no persistent kernel
    (every cell, direction and precision) uses local memory: the plan's assumptions."""
    monkeypatch.setenv("GPUCONV_EMULATED_GPU", gpu)
    src = cuda_source_dir()
    report = occupancy.resource_report((src / source).read_text(), [f"-I{src}"])
    spec = occupancy.GPUS[gpu]
    names = [n for n in report if "persistent" in n]
    assert len(names) == 16
    for name in names:
        assert report[name].local_bytes == 0, f"{name} on {gpu}: spills {report[name]}"
        smem = spec["smem_per_block_optin"] - report[name].static_smem
        per_sm, limit = occupancy.blocks_per_sm(report[name], threads, smem, spec)
        assert per_sm >= 1, f"{name} on {gpu}: not resident ({limit})"


# --------------------------------------------------------------------------- the emulator

def test_occupancy_follows_the_calculator_rules():
    h100 = occupancy.GPUS["H100"]
    # 64 registers x 256 threads: 8 warps of 2048 registers, 32 warps' worth -> 4 blocks
    assert occupancy.blocks_per_sm(occupancy.Resources(64, 0), 256, 0, h100) == (4, "registers")
    # 100 KB + 1 KB reserved per block of 228 KB -> 2 blocks
    assert occupancy.blocks_per_sm(occupancy.Resources(32, 0), 128, 100 * 1024, h100) == (
        2, "shared memory")
    assert occupancy.blocks_per_sm(occupancy.Resources(32, 0), 1024, 0, h100) == (2, "threads")
    assert occupancy.blocks_per_sm(occupancy.Resources(16, 0), 32, 0, h100) == (
        32, "blocks per SM")
    assert occupancy.blocks_per_sm(occupancy.Resources(32, 0), 32, 228 * 1024, h100)[0] == 0


def test_the_resource_report_is_read_per_entry_point():
    text = ("ptxas info    : Compiling entry function 'k_a' for 'sm_90'\n"
            "ptxas info    : Function properties for k_a\n"
            "    16 bytes stack frame, 4 bytes spill stores, 8 bytes spill loads\n"
            "ptxas info    : Used 40 registers, used 1 barriers, 2048 bytes smem, 400 bytes cmem[0]\n"
            "ptxas info    : Compiling entry function 'k_b' for 'sm_90'\n"
            "ptxas info    : Used 8 registers, 380 bytes cmem[0]\n")
    assert occupancy.parse_report(text) == {"k_a": occupancy.Resources(40, 2048, 28),
                                            "k_b": occupancy.Resources(8, 0)}


def emulated() -> bool:
    cp = backend.cupy_or_none()
    return cp is not None and cp.__version__.endswith("emulated")


EMULATED = [pytest.mark.gpu, pytest.mark.skipif(not emulated(), reason="checks the emulator")]


def persistent_launch(H: int, steps: int, counter_value: int = 0):
    """The arguments of lstm_fwd_persistent_f64 for a forward of T=steps, B=1, H, U=1."""
    cp = backend.cupy_or_none()
    z = lambda *s: cp.zeros(s)  # noqa: E731
    args = (z(steps, 1, 4 * H), z(1, 4 * H, H), R.NULL, R.NULL, z(1, steps + 1, 1, H),
            z(1, steps + 1, 1, H), R.NULL, R.NULL, z(steps, 1, H),
            cp.full(1, counter_value, np.uint32))
    return args + tuple(np.int32(v) for v in (steps, 1, H, 1, 1, R.K_CHUNK))


# Faults of a launch of lstm_fwd_persistent_f64 (3 blocks of one unit, 2 steps) that a GPU
# would hang on, shrink, or silently get wrong, and the emulator's message for each.
EMULATOR_FAULTS = [
    # 4000 blocks with the shared memory of a 4000-unit slice each: one per SM is resident
    # (the launch's arrays are those of the small grid: it must be refused before it runs)
    pytest.param(dict(grid=4000, smem=R.smem_bytes("persistent", 4, 1, 4000, 8, 8)),
                 r"cooperative grid larger than the 1 x 132 blocks", id="grid-not-resident"),
    pytest.param(dict(cooperative=False), "not cooperative",
                 id="grid-barrier-outside-a-cooperative-launch"),
    pytest.param(dict(counter=3), "arrival counter reads 6 at round 1 of 3",
                 id="barrier-counter-not-zeroed"),
    # room for the weights and one staged value: the next staged value lands past the end
    pytest.param(dict(smem=R.smem_bytes("persistent", 4, 1, 3, 8, 0) + 8),
                 "wrote past its .* bytes of dynamic shared memory",
                 id="too-little-dynamic-shared-memory"),
]


@pytest.mark.parametrize("fault,match", [pytest.param(*p.values, marks=EMULATED, id=p.id)
                                         for p in EMULATOR_FAULTS])
def test_the_emulator_catches(fault, match):
    smem = fault.get("smem", R.smem_bytes("persistent", 4, 1, 3, 8, 8))
    k = R._with_smem(R.kernel(R.FAMILY, "lstm_fwd_persistent_f64",
                              cooperative=fault.get("cooperative", True)), smem)
    with pytest.raises(RuntimeError, match=match):
        k((fault.get("grid", 3),), (32,), persistent_launch(3, 2, fault.get("counter", 0)),
          shared_mem=smem)


def mma_launch(H: int, steps: int):
    """The arguments of lstm_fwd_persistent_mma_f32 for a forward of T=steps, B=1, H, U=1."""
    cp = backend.cupy_or_none()
    z = lambda *s: cp.zeros(s, np.float32)  # noqa: E731
    args = (z(steps, 1, 4 * H), z(1, 4 * H, H), R.NULL, R.NULL, z(1, steps + 1, 1, H),
            z(1, steps + 1, 1, H), R.NULL, R.NULL, z(steps, 1, H), cp.zeros(1, np.uint32))
    return args + tuple(np.int32(v) for v in (steps, 1, H, 1, 1))


@pytest.mark.parametrize("threads,smem", [
    pytest.param(R.MMA_THREADS, R.mma_smem_bytes("fwd", 4, 1, 3, 4) - 16, marks=EMULATED,
                 id="shared-memory-short-of-the-slice-and-staging"),
    pytest.param(128, R.mma_smem_bytes("fwd", 4, 1, 3, 4), marks=EMULATED,
                 id="not-the-block-size-of-its-warp-grid")])
def test_a_tensor_core_kernel_traps_on_a_launch_it_was_not_planned_for(threads, smem):
    k = R._with_smem(R.kernel(R.MMA_FAMILY, "lstm_fwd_persistent_mma_f32", cooperative=True),
                     smem)
    with pytest.raises(RuntimeError, match=r"__trap\(\) called"):
        k((3,), (threads,), mma_launch(3, 2), shared_mem=smem)


# --------------------------------------------------------------------------- the numba twin

NUMBA_CASES = [pytest.param(dict(T=3, B=2, I=3, H=5, L=1, bidirectional=False), 2, "float64",
                            id="one-direction-H5-in-tiles-of-2-2-1-float64"),
               pytest.param(dict(T=2, B=3, I=2, H=4, L=2, bidirectional=True, bias=False),
                            None, "float32", id="op-L2-bidir-nobias-float32")]


def registry_params(params: list, c: dict) -> list:
    """params as the registry takes them: 4 per layer and direction, None for absent biases."""
    if c.get("bias", True):
        return list(params)
    return [q for i in range(0, len(params), 2) for q in (*params[i:i + 2], None, None)]


@pytest.mark.skipif(not numba_cuda.simulator_enabled(),
                    reason="runs under NUMBA_ENABLE_CUDASIM=1 (set by conftest without a GPU)")
@pytest.mark.parametrize("c,units,dtype", NUMBA_CASES)
def test_the_numba_twin_under_the_simulator_matches_reference(c, units, dtype):
    from gpuconv.kernels.numba_cuda import rnn_persistent as N

    x, (h0, c0), params, _ = seq_inputs("lstm", c, rng_for("numba", c["H"]))
    ref = forward("lstm", "reference", x, (h0, c0), params, seq_kwargs(c))
    x, h0, c0 = (a.astype(dtype) for a in (x, h0, c0))
    params = [None if q is None else q.astype(dtype) for q in registry_params(params, c)]
    if units is None:
        out = N.lstm(x, h0, c0, params, c["L"], c["bidirectional"], None, None)
    else:
        out = N.lstm_direction(x, h0[0], c0[0], *params, units=units)
        ref = [ref[0], ref[1][0], ref[2][0]]
    for j, (o, r) in enumerate(zip(out, ref, strict=True)):
        check_against_reference(o, r, dtype, f"numba twin[{j}]")


@pytest.mark.gpu
@pytest.mark.skipif(not numba_cuda.is_available(), reason="needs a GPU with numba-cuda")
def test_the_numba_cuda_twin_on_a_gpu_matches_reference():
    from gpuconv.kernels.numba_cuda import rnn_persistent as N

    c = dict(T=3, B=4, I=3, H=40, L=2, bidirectional=True)
    x, (h0, c0), params, _ = seq_inputs("lstm", c, rng_for("numba gpu"))
    ref = forward("lstm", "reference", x, (h0, c0), params, seq_kwargs(c))
    out = N.lstm(*(backend.to_device(a.astype(np.float32), "cuda") for a in (x, h0, c0)),
                 [backend.to_device(q.astype(np.float32), "cuda") for q in params], 2, True, None)
    for j, (o, r) in enumerate(zip(out, ref, strict=True)):
        check_against_reference(o, r, "float32", f"numba twin on a GPU[{j}]")


# --------------------------------------------------------------------------- the bench suite

def test_the_lstm_suite_times_gru_and_the_flashrnn_case_in_bfloat16():
    from gpuconv import benchmark
    from gpuconv.benchmark.cases import lstm_passes

    cases = {c["label"]: c for c in benchmark.load_suite("lstm", "gpu")}
    for shape in ("50x64_128_256", "25x64_512_512", "100x128_1024_1024"):
        assert cases[f"gru_{shape}"]["kind"] == "gru" and f"lstm_{shape}" in cases
    flash = cases["lstm_1024x16_768_768_bf16"]
    fwd, bwd = lstm_passes(flash)
    assert (fwd.op, bwd.op, fwd.dtype) == ("lstm", "lstm_backward", "bfloat16")
    assert fwd.flops == 2 * 1024 * 16 * 4 * 768 * (768 + 768)
    gru_fwd, _ = lstm_passes(cases["gru_1024x16_768_768_bf16"])
    assert gru_fwd.op == "gru" and gru_fwd.flops == 3 * fwd.flops // 4
    assert gru_fwd.float32_arrays and fwd.float32_arrays


@pytest.mark.parametrize("forced,family", [gpu_param(None, R.MMA_FAMILY, id="chosen"),
                                           gpu_param("fma", R.FAMILY, id="fma-forced")])
def test_the_lstm_suite_runs_the_tensor_core_kernels_and_times_the_fma_ones_on_request(
        forced, family, monkeypatch):
    """On an H100 every case of the gpu lstm suite plans the tensor-core persistent kernels
    (in the case's precision, float32 otherwise); GPUCONV_RNN_PERSISTENT_KERNELS=fma times the
    FMA kernels on the same cases."""
    from gpuconv import benchmark

    if emulated():
        monkeypatch.setenv("GPUCONV_EMULATED_GPU", "H100")
    elif R._props()["major"] != 9:
        pytest.skip("the plan is checked for an H100")
    monkeypatch.setenv(R.KERNELS_ENV, forced or "")
    R._persistent_plan.cache_clear()  # its key has the device's id, not the emulated GPU
    for c in benchmark.load_suite("lstm", "gpu"):
        with float32_precision(benchmark.RUN_PRECISION[c.get("dtype", "float32")]):
            plans, why = R.persistent_plan(c.get("kind", "lstm"), c["T"], c["B"], c["hidden"],
                                           1, np.float32)
        assert plans is not None, f"{c['label']}: {why}"
        assert {p.family for p in plans.values()} == {family}, c["label"]


def test_the_kernel_kind_comes_from_the_tests_then_the_environment(monkeypatch):
    monkeypatch.setenv(R.KERNELS_ENV, "fma")
    assert R.persistent_kernels() == "fma"
    monkeypatch.setattr(R, "PERSISTENT_KERNELS", "mma")
    assert R.persistent_kernels() == "mma"
    monkeypatch.setattr(R, "PERSISTENT_KERNELS", None)
    monkeypatch.setenv(R.KERNELS_ENV, "")
    assert R.persistent_kernels() is None
    monkeypatch.setenv(R.KERNELS_ENV, "tensor")
    with pytest.raises(ValueError, match="GPUCONV_RNN_PERSISTENT_KERNELS must be one of fma, mma"):
        R.persistent_kernels()
