"""The promotion gate: does tonight's model replace the champion? Both are judged by the same protocol."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from recsys.evaluation.protocol import HeldOut, recommender_scorer

if TYPE_CHECKING:
    import keras


def champion_metric(model: keras.Model, held: HeldOut, metric: str, ks: Sequence[int]) -> float:
    """The champion's ``metric`` on today's held-out users, scored exactly as evaluate scores tonight's model.

    Args:
        model: the champion's recommender (for a final fit, its held-out twin).
        held: today's held-out users (:meth:`HeldOut.of` today's matrices).
        metric: e.g. ``ndcg@10``; its K must be among ``ks``.
        ks: the cut-offs evaluate ranked at (:func:`recsys.evaluation.protocol.cutoffs`).
    """
    scorer = recommender_scorer(model, held.history.shape[1])
    return float(held.score(scorer, ks).summary()[metric])


def gate_decision(
    challenger: float | None, champion: float | None, tolerance: float, promote: bool, *,
    ds: str | None = None, champion_ds: str | None = None, popularity: float | None = None,
) -> tuple[bool, str]:
    """Whether the challenger (trained for ``ds``) becomes champion, and why (pure: no registry access).

    Without a champion, the challenger must beat ``popularity`` (the popularity baseline's figure in
    its own evaluation), so a model trained on data that went wrong never becomes the first champion.
    A champion trained for a later date than the challenger's always stays: a backfill or rerun of an
    earlier date never moves production back to older data (nor could the test split of an earlier
    date judge a model that has trained on it fairly).
    """
    if not promote:
        return False, "promotion is switched off (register.promote)"
    if challenger is None or not math.isfinite(challenger):
        return False, "the challenger has no valid evaluation"
    if champion is None:
        if popularity is None or not math.isfinite(popularity):
            return False, "no champion yet, and no popularity baseline to beat in the evaluation"
        if challenger > popularity:
            return True, f"no champion yet; challenger {challenger:.4f} > popularity baseline {popularity:.4f}"
        return False, (f"no champion yet, but the challenger {challenger:.4f} does not beat the popularity baseline "
                       f"{popularity:.4f}: not promoted")
    if ds is not None and champion_ds is not None and champion_ds > ds:
        return False, f"the champion was trained for a later date ({champion_ds} > {ds}) and stays"
    if challenger >= champion * (1.0 - tolerance):
        return True, f"challenger {challenger:.4f} >= champion {champion:.4f} x (1 - {tolerance})"
    return False, f"challenger {challenger:.4f} < champion {champion:.4f} x (1 - {tolerance})"
