"""Samplers for sample expansion, each a small object with one method, composed by jobs.expand."""

from jobs.sampling.cooccurrence import CooccurrenceSampler
from jobs.sampling.hard import HardNegativeSampler
from jobs.sampling.mixer import NEGATIVE_SOURCES, NegativeMixer, allot
from jobs.sampling.popularity import PopularitySampler, popularity_weights
from jobs.sampling.seen import SeenItems, draw_unseen
from jobs.sampling.uniform import UniformSampler

__all__ = [
    "NEGATIVE_SOURCES",
    "CooccurrenceSampler",
    "HardNegativeSampler",
    "NegativeMixer",
    "PopularitySampler",
    "SeenItems",
    "UniformSampler",
    "allot",
    "draw_unseen",
    "popularity_weights",
]
