"""Plots comparing synthetic users with real ones: item popularity curves and history length histograms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp

from recsys.augmentation.quality import RealUsers, item_counts, length_counts
from recsys.core.lake import LENGTH_PLOT, POPULARITY_PLOT


def plot_series(real: RealUsers, trained: sp.csr_matrix, untrained: sp.csr_matrix) -> dict[str, dict[str, np.ndarray]]:
    """The series ``save_plots`` draws: item counts and length histograms of real and synthetic users."""
    return {
        "item_popularity": {"real": real.items, "trained": item_counts(trained), "untrained": item_counts(untrained)},
        "user_length": {"real": real.lengths, "trained": length_counts(trained, real.edges),
                        "untrained": length_counts(untrained, real.edges), "edges": real.edges},
    }


def save_plots(plots: dict[str, dict[str, np.ndarray]], folder: Path) -> list[Path]:
    """Write the popularity and length comparison plots as PNGs; return their paths.

    ``plots["item_popularity"]`` holds item counts per variant (drawn as sorted popularity
    curves); ``plots["user_length"]`` holds length histograms per variant plus their ``edges``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for name, file in (("item_popularity", POPULARITY_PLOT), ("user_length", LENGTH_PLOT)):
        series = dict(plots[name])
        edges = series.pop("edges", None)
        fig, ax = plt.subplots(figsize=(6, 4))
        for label, counts in series.items():
            share = counts / counts.sum() if counts.sum() > 0 else counts.astype(float)
            if edges is None:
                ax.plot(np.arange(1, len(share) + 1), np.sort(share)[::-1], label=label)
            else:
                ax.stairs(share, edges, label=label)
        if edges is None:
            ax.set(xlabel="item rank (each curve sorted by its own popularity)", ylabel="share of interactions",
                   yscale="log")
        else:
            ax.set(xlabel="items per user", ylabel="share of users", xscale="log")
        ax.set_title(name.replace("_", " "))
        ax.legend()
        fig.tight_layout()
        fig.savefig(folder / file, dpi=100)
        plt.close(fig)
        paths.append(folder / file)
    return paths
