"""The filters synthetic users pass before they are written: discriminator, memorisation, duplicates."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.augmentation.quality import RealUsers, memorised
from recsys.augmentation.synthesis import INFERENCE_BATCH, Synthetic
from recsys.models.gan import PROFILE, SEGMENT, VECTOR, dense_rows


def discriminator_scores(discriminator: Any, vectors: sp.csr_matrix, segments: np.ndarray) -> np.ndarray:
    """D's probability that each 0/1 row is a real user of its segment (segment-only condition)."""
    out = np.empty(vectors.shape[0], dtype=np.float32)
    for start in range(0, vectors.shape[0], INFERENCE_BATCH):
        rows = np.arange(start, min(start + INFERENCE_BATCH, vectors.shape[0]))
        block = dense_rows(vectors, rows)
        logits = discriminator(
            {VECTOR: block, PROFILE: np.zeros_like(block), SEGMENT: segments[rows].astype(np.int32)}, training=False
        )
        out[rows] = 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64).ravel()))
    return out


def duplicate_rows(syn: sp.csr_matrix, real: sp.csr_matrix) -> np.ndarray:
    """True for synthetic rows whose item set equals a real user's or an earlier synthetic row's."""
    def key(m: sp.csr_matrix, i: int) -> bytes:
        return np.sort(m.indices[m.indptr[i]:m.indptr[i + 1]]).tobytes()

    seen = {key(real, i) for i in range(real.shape[0])}
    out = np.zeros(syn.shape[0], dtype=bool)
    for i in range(syn.shape[0]):
        k = key(syn, i)
        out[i] = k in seen
        seen.add(k)
    return out


def filter_synthetic(
    discriminator: Any, syn: Synthetic, real: RealUsers, reference_segments: np.ndarray, d_quantile: float
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Apply the discriminator, memorisation and duplicate filters in turn.

    Args:
        discriminator: the trained D.
        syn: the synthetic users to filter.
        real: the real users; its reference rows set D's cut, its threshold the memorisation one.
        reference_segments: the segment of each reference row.
        d_quantile: share of users D may drop (``augment.discriminator_quantile``).

    Returns:
        ``(kept, filters)``: the kept rows of ``syn.items`` and, per filter, its threshold and counts.
    """
    real_rows = real.matrix[real.reference]
    real_cut = float(np.quantile(discriminator_scores(discriminator, real_rows, reference_segments), d_quantile))
    syn_d = discriminator_scores(discriminator, syn.items, syn.requested)
    syn_cut = float(np.quantile(syn_d, d_quantile)) if len(syn_d) else 0.0
    # below the worst real users' score, but an over-confident D (it can tell every synthetic user
    # apart on a wide catalogue) must not wipe out the sample: never drop more than the quantile
    d_cut = min(real_cut, syn_cut)
    kept = np.flatnonzero(syn_d >= d_cut)
    filters = [{
        "name": "discriminator", "threshold": d_cut, "real_quantile": real_cut, "synthetic_quantile": syn_cut,
        "before": syn.items.shape[0], "after": len(kept),
    }]
    before = len(kept)
    kept = kept[~memorised(syn.items[kept], real.matrix, real.threshold)]
    filters.append({"name": "memorisation", "threshold": real.threshold, "before": before, "after": len(kept)})
    before = len(kept)
    kept = kept[~duplicate_rows(syn.items[kept], real.matrix)]
    filters.append({"name": "duplicates", "before": before, "after": len(kept)})
    return kept, filters
