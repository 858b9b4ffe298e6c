"""CUDA graph capture of gpuconv's kernels (gpuconv.graphs): a capture records, a replay
re-runs on the same buffers, host values reach a capture only through deferred uploads,
and dropout's Philox offsets move on per replay. Without a GPU these run under the CUDA
emulator (tests/test_cuda_emulated.py), whose model of capture is that of CUDA: nothing runs
while capturing, and a synchronisation or a host copy there is an error."""
from __future__ import annotations

import numpy as np
import pytest

import gpuconv.functional as F
from gpuconv import backend, graphs, nn

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not backend.gpu_available(), reason="needs a GPU with CuPy")]


def _cuda(a):
    return backend.to_device(np.asarray(a), "cuda")


def test_a_capture_runs_nothing_and_each_replay_reruns_on_the_same_buffers():
    x = _cuda(np.array([-1.0, 2.0, -3.0, 4.0]))
    acc = _cuda(np.zeros(4))
    graph = graphs.StepGraph()

    def step():
        y = F.relu(x)  # a kernel of kernels/activation.cu
        acc[...] += y  # and a CuPy operation on a buffer made before the capture
        return y

    with graphs.side_stream():
        y = graph.capture(step)
        np.testing.assert_array_equal(backend.to_numpy(acc), 0.0)  # nothing ran
        graph.replay()
        np.testing.assert_array_equal(backend.to_numpy(y), [0.0, 2.0, 0.0, 4.0])
        x[...] = _cuda(np.array([5.0, -6.0, 7.0, -8.0]))  # new values, same buffer
        graph.replay()
    np.testing.assert_array_equal(backend.to_numpy(y), [5.0, 0.0, 7.0, 0.0])
    np.testing.assert_array_equal(backend.to_numpy(acc), [5.0, 2.0, 7.0, 4.0])


def test_a_capture_on_the_legacy_default_stream_is_refused():
    with pytest.raises(RuntimeError, match="legacy default stream"):
        graphs.StepGraph().capture(lambda: None)


def test_an_upload_inside_a_capture_reaches_the_device_when_the_capture_ends():
    x = _cuda(np.zeros(3))
    graph = graphs.StepGraph()

    def step():
        table = graphs.upload(np.array([1.0, 2.0, 3.0]))  # no host copy while capturing
        x[...] += table

    with graphs.side_stream():
        graph.capture(step)
        graph.replay()
        graph.replay()
    np.testing.assert_array_equal(backend.to_numpy(x), [2.0, 4.0, 6.0])


def test_reading_a_value_inside_a_capture_is_an_error():
    x = _cuda(np.ones(3))
    with graphs.side_stream():
        with pytest.raises(Exception, match="capturing"):
            graphs.StepGraph().capture(lambda: float(x.sum()))


def test_each_replay_draws_the_next_dropout_offsets_as_eager_calls_would():
    x = _cuda(np.ones((4, 8)))
    nn.manual_seed(5)
    layer = nn.Dropout(0.5)
    eager = [backend.to_numpy(layer(x)) for _ in range(4)]
    nn.manual_seed(5)
    graph = graphs.StepGraph()
    with graphs.side_stream():
        first = backend.to_numpy(layer(x))  # an eager call: offset 0
        out = graph.capture(lambda: layer(x))
        replays = []
        for _ in range(3):  # offsets 1, 2, 3
            graph.replay()
            replays.append(backend.to_numpy(out))
    for got, want in zip([first] + replays, eager, strict=True):
        np.testing.assert_array_equal(got, want)
    assert nn.init.default_philox().offset == 4


def test_a_copy_made_inside_a_capture_is_made_again_by_each_replay():
    cp = backend.cupy_or_none()
    x = _cuda(np.arange(6.0).reshape(2, 3))
    graph = graphs.StepGraph()
    with graphs.side_stream():
        y = graph.capture(lambda: cp.ascontiguousarray(x.T))  # a view in, a copy out
        x[...] = _cuda(np.arange(6.0, 12.0).reshape(2, 3))
        graph.replay()
    np.testing.assert_array_equal(backend.to_numpy(y), np.arange(6.0, 12.0).reshape(2, 3).T)
