"""The per-point step of the k-means assignment, written once in plain Python for numba to
compile twice: for the CPU (the ``numpy`` impl's ``njit`` loop) and as a device function of
the ``numba_cuda`` kernel. Importing this module imports neither numba nor CUDA."""


def nearest_centre(dots, c_sq_norms, x_sq_norms, i):
    """``(j, sq_dist)`` of point i: the j of the smallest ``||c_j||^2 - 2 dots[i, j]`` (the
    first on ties, as NumPy's argmin) and ``||x_i||^2`` plus that, clamped at 0 (rounding
    can dip below 0 for a point on its centre).

    ``dots + dots``, not ``2 * dots``: the same rounding as ``-2 x.c + ||c||^2``, and no
    integer literal that would promote float32 arithmetic to float64.
    """
    best = c_sq_norms[0] - (dots[i, 0] + dots[i, 0])
    nearest = 0
    for j in range(1, dots.shape[1]):
        value = c_sq_norms[j] - (dots[i, j] + dots[i, j])
        if value < best:
            best = value
            nearest = j
    distance = best + x_sq_norms[i]
    if distance < 0:
        distance -= distance  # exactly 0, in the arrays' type
    return nearest, distance
