"""Item-item cosine similarity, the one implementation behind ItemKNN, TSTR scoring and co-occurrence positives."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def unit_columns(x: sp.spmatrix) -> sp.csr_matrix:
    """``x`` with every item column scaled to unit length, so that ``cos(i, j) = (x̂ᵀ x̂)_ij``.

    Columns without entries stay zero (their cosine with anything is 0). The dtype of ``x`` is kept;
    callers binarise first when they want co-occurrence counts rather than weights.

    Args:
        x: users x items matrix.

    Returns:
        CSR ``x̂ = x D⁻¹`` with ``D`` the diagonal of column norms.
    """
    x = sp.csr_matrix(x)
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=0)).ravel()).astype(x.dtype)
    inverse = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return sp.csr_matrix(x @ sp.diags(inverse))
