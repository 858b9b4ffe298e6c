"""kernels/philox.cuh, the generator of the CUDA C dropout mask, run on the host: its words
must equal NumPy's Philox, the generator of the CPU mask (CI has no GPU to run the kernel).

A small host program includes the header as it ships, is compiled by nvcc, and prints the
words of the first counters for a seed."""
import shutil
import subprocess

import numpy as np
import pytest

from gpuconv._resources import cuda_source_dir

NVCC = shutil.which("nvcc")
pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")

# Host-only test driver: argv = seed, number of counters; prints the 4 words of each counter
# (t + 1, 0, 0, 0), t = 0, 1, ..., as the dropout kernel draws them.
DRIVER = r"""
#include <cstdio>
#include <cstdlib>
#include "philox.cuh"

int main(int argc, char** argv) {
    const unsigned long long seed = std::strtoull(argv[1], nullptr, 10);
    const long long counters = std::atoll(argv[2]);
    for (long long t = 0; t < counters; ++t) {
        unsigned long long words[PHILOX_WORDS] = {(unsigned long long)t + 1, 0, 0, 0};
        philox4x64_10(words, seed, 0);
        for (int j = 0; j < PHILOX_WORDS; ++j) std::printf("%llu\n", words[j]);
    }
    return 0;
}
"""
COUNTERS = 5


@pytest.fixture(scope="module")
def philox_words(tmp_path_factory):
    """``philox_words(seed)``: the header's first ``4 * COUNTERS`` words for ``seed``."""
    folder = tmp_path_factory.mktemp("philox")
    source, program = folder / "driver.cu", folder / "driver"
    source.write_text(DRIVER)
    cmd = [NVCC, "-std=c++17", "-Werror", "all-warnings", f"-I{cuda_source_dir()}",
           "-o", str(program), str(source)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(cmd)}\n{result.stderr}"

    def words(seed: int) -> np.ndarray:
        out = subprocess.run([str(program), str(seed), str(COUNTERS)], capture_output=True,
                             text=True, check=True).stdout
        return np.array([int(w) for w in out.split()], dtype=np.uint64)
    return words


@pytest.mark.parametrize("seed", [0, 1, 12345, 2 ** 63, 2 ** 64 - 1])
def test_cuda_philox_words_equal_numpy_philox(philox_words, seed):
    expected = np.random.Philox(key=seed).random_raw(4 * COUNTERS)
    np.testing.assert_array_equal(philox_words(seed), expected)
