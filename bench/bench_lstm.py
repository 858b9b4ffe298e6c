"""An LSTM layer, forward and backward, on the CPU: the numpy impl, beside PyTorch's CPU
kernels where torch is installed.

Cases: ``bench/suites/lstm.json``; how to run and time them: ``bench/wrappers.py``."""
from wrappers import benchmark_tests

test_numpy_impl, test_array_reference, test_torch = benchmark_tests("lstm")
