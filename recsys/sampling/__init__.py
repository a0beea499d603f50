"""Samplers for sample expansion, each a small object with one method, composed by recsys.sampling.expansion."""

from recsys.sampling.cooccurrence import CooccurrenceSampler
from recsys.sampling.hard import HardNegativeSampler
from recsys.sampling.mixer import NEGATIVE_SOURCES, NegativeMixer, allot
from recsys.sampling.popularity import PopularitySampler, popularity_weights
from recsys.sampling.seen import SeenItems, draw_unseen
from recsys.sampling.uniform import UniformSampler

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
