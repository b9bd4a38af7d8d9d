"""The one truncated SVD the item models use: seeded, randomized (scikit-learn), on one BLAS thread."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def svd_factors(matrix: sp.csr_matrix, k: int, *, n_iter: int = 4, oversamples: int = 16,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(U, s, V^T)`` of the top ``k`` singular triplets of ``matrix`` (signs fixed, seeded)."""
    from sklearn.utils.extmath import randomized_svd
    from threadpoolctl import threadpool_limits

    # One BLAS thread: the products here are tall and skinny (items x ~80), where threads gain little,
    # and on a shared 2-core machine threaded OpenBLAS QR was measured 10x slower than one thread.
    # It also makes the bytes independent of the machine's core count.
    with threadpool_limits(limits=1, user_api="blas"):
        u, s, vt = randomized_svd(matrix, k, n_oversamples=oversamples, n_iter=n_iter,
                                  power_iteration_normalizer="QR", random_state=seed, flip_sign=True)
    return u, s, vt
