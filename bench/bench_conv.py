"""conv2d forward, grad_input and grad_weight on the CPU: the numpy impl, beside PyTorch's
CPU kernels where torch is installed and im2col + GEMM in plain NumPy calls.

Cases: ``bench/suites/conv.json``; how to run and time them: ``bench/wrappers.py``."""
from wrappers import benchmark_tests

test_numpy_impl, test_array_reference, test_torch = benchmark_tests("conv")
