"""The train job: both models trained from the lake's tables and examples, committed with facts."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from recsys.core.columns import SOURCES
from recsys.core.lake import Lake
from recsys.core.matrices import Matrices
from tests.support import planted_blocks, write_matrices

DS = "2026-01-31"
FAST = ["--set", "train.epochs=6", "--set", "train.patience=3", "--set", "train.hidden=16",
        "--set", "train.batch_size=64", "--set", "train.learning_rate=0.01"]


def augmented_examples(matrices: Matrices, examples: pd.DataFrame) -> pd.DataFrame:
    """The planted examples plus a few GAN positives and two synthetic users with a negative each."""
    n = matrices.n_users
    extra = pd.DataFrame({
        "user_idx": [0, 1, n, n, n + 1, n + 1, n],
        "item_idx": [9, 8, 0, 1, 12, 13, 30],
        "label": [1, 1, 1, 1, 1, 1, 0],
        "weight": [0.2, 0.2, 0.3, 0.3, 0.25, 0.25, 1.0],
        "source": ["gan_pos", "gan_pos", "syn_user", "syn_user", "syn_user", "syn_user", "neg_uniform"],
    })
    return pd.concat([examples, extra], ignore_index=True).astype(examples.dtypes.to_dict())


def write_examples(lake: Lake, ds: str, examples: pd.DataFrame) -> None:
    with lake.writing("examples", ds) as staged:
        examples.to_parquet(staged / "examples.parquet", index=False)


@pytest.fixture
def lake_with_inputs(lake: Lake) -> tuple[Lake, pd.DataFrame]:
    matrices, examples = planted_blocks()
    examples = augmented_examples(matrices, examples)
    write_matrices(lake, DS, matrices)
    write_examples(lake, DS, examples)
    return lake, examples


@pytest.mark.tf
def test_train_writes_both_models_and_facts(lake_with_inputs: tuple[Lake, pd.DataFrame]) -> None:
    from jobs.train import main
    from recsys.models.recommender import load_recommender

    lake, examples = lake_with_inputs
    result = main(["--ds", DS, "--lake", str(lake.root), *FAST])
    out = lake.path("models", DS)
    assert result["models_path"] == str(out)
    assert result["examples"] == len(examples)
    assert result["examples_noaug"] == len(examples) - 6  # 2 gan_pos and 4 syn_user rows left out
    facts = json.loads((out / "train.json").read_text())
    expected_counts = {s: 0 for s in SOURCES} | {"real_pos": 900, "gan_pos": 2, "syn_user": 4}
    expected_counts["neg_uniform"] = int((examples["source"] == "neg_uniform").sum())
    assert facts["examples_by_source"] == expected_counts
    for name in ("model", "model_noaug"):
        run = facts["models"][name]
        assert 1 <= run["epochs"] <= 6
        assert run["best_valid_ndcg@10"] == max(run["valid_ndcg@10"])
        model = load_recommender(out / f"{name}.keras")
        assert model.input_shape == (None, 40) and model.output_shape == (None, 40)
        # 40 items is far below train.large_catalogue_items: the full softmax ran, so no negatives ablation
        assert run["objective"] == "full" and run["negatives_ablation_valid_ndcg@10"] is None
    assert facts["models"]["model"]["examples"] == len(examples)
    for name in ("model", "model_noaug"):  # the item-item blend weight is the best of those tried on valid
        by_alpha = facts["models"][name]["valid_ndcg@10_by_alpha"]
        assert set(by_alpha) == {"0.0", "0.25", "0.5"}
        assert by_alpha[str(facts["models"][name]["item_item_alpha"])] == max(by_alpha.values())
        assert by_alpha["0.0"] == facts["models"][name]["best_valid_ndcg@10"]  # alpha 0 is the plain model
    # EASE's lambda, chosen once on valid: the best of those tried, and the one the item-item path used
    assert facts["ease_validation"][str(facts["ease_lambda"])] == max(facts["ease_validation"].values())
    assert set(facts["ease_validation"]) == {"50.0", "200.0", "500.0", "1000.0"}
    assert facts["models"]["model"]["item_item_lambda"] == facts["ease_lambda"]
    assert facts["ease_items"] == 40  # every planted item has train interactions, under train.ease_max_items
    # the final fit: as many epochs as the held-out fit's best, on examples plus the valid and test positives
    final = facts["models"]["model_final"]
    assert final["epochs"] == final["best_epoch"] == facts["models"]["model"]["best_epoch"]
    matrices, _ = planted_blocks()
    assert final["examples"] == len(examples) + matrices.valid.nnz + matrices.test.nnz
    assert result["model_final"] == str(out / "model_final.keras")
    assert load_recommender(out / "model_final.keras").output_shape == (None, 40)
    assert facts["models"]["model"]["users_trained"] == 182  # 180 real users and 2 synthetic ones
    assert facts["models"]["model_noaug"]["users_trained"] == 180
    assert not list((lake.root / "_staging").iterdir())


def test_train_reports_missing_examples(lake: Lake) -> None:
    from jobs.train import main

    matrices, _ = planted_blocks()
    write_matrices(lake, DS, matrices)
    with pytest.raises(FileNotFoundError, match="examples partition for 2026-01-31 is missing"):
        main(["--ds", DS, "--lake", str(lake.root)])


def test_read_examples_rejects_unknown_source(lake: Lake) -> None:
    from recsys.sampling.examples import read_examples

    frame = pd.DataFrame({"user_idx": [0], "item_idx": [0], "label": [1], "weight": [1.0], "source": ["made_up"]})
    write_examples(lake, DS, frame)
    with pytest.raises(ValueError, match="unknown value.*made_up"):
        read_examples(lake, DS)


def test_without_augmentation_keeps_real_positives_and_negatives() -> None:
    from recsys.models.training import without_augmentation

    frame = pd.DataFrame({"user_idx": range(len(SOURCES)), "source": list(SOURCES)})
    assert without_augmentation(frame)["source"].tolist() == ["real_pos", "neg_uniform", "neg_pop", "neg_hard"]


def test_whole_window_adds_held_out_positives_and_holds_nothing_out() -> None:
    import scipy.sparse as sp

    from recsys.models.recommender import training_set
    from recsys.models.training import whole_window

    def csr(rows: list[list[float]]) -> sp.csr_matrix:
        return sp.csr_matrix(np.array(rows, dtype=np.float32))

    matrices = Matrices(train=csr([[1, 0, 0], [0, 1, 0]]), valid=csr([[0, 1, 0], [0, 0, 0]]),
                        test=csr([[0, 0, 0], [0, 0, 1]]), user_ids=np.array(["a", "b"], dtype=object),
                        item_ids=np.array(["x", "y", "z"], dtype=object))
    examples = pd.DataFrame({"user_idx": [0, 0, 1], "item_idx": [0, 1, 1], "label": [1, 0, 1],
                             "weight": [1.0, 1.0, 1.0], "source": ["real_pos", "neg_uniform", "real_pos"]})
    examples = examples.astype({"user_idx": "int32", "item_idx": "int32", "label": "int8", "weight": "float32"})
    final_examples, window = whole_window(examples, matrices)
    assert final_examples.dtypes.to_dict() == examples.dtypes.to_dict()
    assert final_examples.iloc[3:].values.tolist() == [[0, 1, 1, 1.0, "real_pos"], [1, 2, 1, 1.0, "real_pos"]]
    np.testing.assert_array_equal(window.train.toarray(), [[1, 1, 0], [0, 1, 1]])
    assert window.valid.nnz == 0 and window.test.nnz == 0
    # user 0's sampled negative on item 1 (their valid item) gives way to the positive
    np.testing.assert_array_equal(training_set(final_examples, window.train).labels.toarray(), [[1, 1, 0], [0, 1, 1]])
