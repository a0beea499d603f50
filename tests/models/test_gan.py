"""The GAN's losses against hand-computed values, its masks' shares, its noise, and its saved form."""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np
import pytest
import scipy.sparse as sp

from recsys.models.gan import (
    NOISE,
    PROFILE,
    SEGMENT,
    build_generator,
    dense_rows,
    discriminator_loss,
    generate,
    generator_adversarial_loss,
    mode_seeking_loss,
    popularity_loss,
    sample_masks,
    zero_reconstruction_loss,
)

pytestmark = pytest.mark.tf


def _np(x: object) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x), dtype=np.float64)


def test_discriminator_loss_is_binary_cross_entropy() -> None:
    real = np.array([[2.0], [0.0]], dtype=np.float32)
    fake = np.array([[-1.0], [3.0]], dtype=np.float32)
    sigmoid = lambda x: 1.0 / (1.0 + math.exp(-x))  # noqa: E731
    expected = -(math.log(sigmoid(2.0)) + math.log(sigmoid(0.0))) / 2 - (
        math.log(1 - sigmoid(-1.0)) + math.log(1 - sigmoid(3.0))
    ) / 2
    assert _np(discriminator_loss(real, fake)) == pytest.approx(expected, rel=1e-5)


def test_generator_adversarial_loss_is_minus_log_d() -> None:
    fake = np.array([[0.0], [1.0]], dtype=np.float32)
    expected = (math.log(2.0) + math.log(1.0 + math.exp(-1.0))) / 2
    assert _np(generator_adversarial_loss(fake)) == pytest.approx(expected, rel=1e-5)


def test_zero_reconstruction_sums_squares_on_masked_items_per_user() -> None:
    scores = np.array([[0.5, 0.2, 0.9], [0.1, 0.4, 0.3]], dtype=np.float32)
    mask = np.array([[1, 0, 1], [0, 1, 0]], dtype=np.float32)
    expected = ((0.25 + 0.81) + 0.16) / 2
    assert _np(zero_reconstruction_loss(scores, mask)) == pytest.approx(expected, rel=1e-5)


def test_mode_seeking_is_inverse_output_change_per_noise_change() -> None:
    a = np.array([[0.0, 1.0]], dtype=np.float32)
    b = np.array([[1.0, 1.0]], dtype=np.float32)
    za = np.array([[0.0, 0.0]], dtype=np.float32)
    zb = np.array([[2.0, 2.0]], dtype=np.float32)
    # mean|a - b| = 0.5, mean|za - zb| = 2 -> ratio 0.25 -> loss 4
    assert _np(mode_seeking_loss(a, b, za, zb, eps=0.0)) == pytest.approx(4.0, rel=1e-6)


def test_popularity_loss_is_kl_of_the_batch_item_distributions() -> None:
    real = np.array([[1, 0, 0], [1, 1, 0]], dtype=np.float32)  # item shares 2/3, 1/3, 0
    fake = np.array([[0.5, 0.5, 0.0], [0.5, 0.0, 0.5]], dtype=np.float32)  # 1/2, 1/4, 1/4
    expected = 2 / 3 * math.log((2 / 3) / 0.5) + 1 / 3 * math.log((1 / 3) / 0.25)  # = log(4/3)
    assert _np(popularity_loss(real, fake)) == pytest.approx(expected, rel=1e-4)
    # the same spread at a different scale (fewer items per user) costs nothing
    assert _np(popularity_loss(real, 0.3 * real)) == pytest.approx(0.0, abs=1e-5)


def test_masks_have_the_configured_shares_and_are_resampled() -> None:
    rng = np.random.default_rng(0)
    real = (rng.random((400, 500)) < 0.1).astype(np.float32)
    ratios = {"zr_ratio": 0.1, "pm_ratio": 0.3, "condition_dropout": 0.2, "profile_drop": 0.25}
    seed = keras.random.SeedGenerator(7)
    masks = {k: _np(v) for k, v in sample_masks(real, seed=seed, **ratios).items()}
    unobserved = 1.0 - real
    n_unobserved = unobserved.sum()

    def within(share: float, expected: float, n: float) -> bool:
        return abs(share - expected) < 4 * math.sqrt(expected * (1 - expected) / n)

    assert np.all(masks["zr"] <= unobserved) and np.all(masks["pm"] <= unobserved)
    assert within(masks["zr"].sum() / n_unobserved, 0.1, n_unobserved)
    assert within(masks["pm"].sum() / n_unobserved, 0.3, n_unobserved)
    keep = masks["keep"].ravel()
    assert set(np.unique(keep)) == {0.0, 1.0}
    assert within(1.0 - keep.mean(), 0.25, len(keep))
    # the condition: kept rows show their items minus ~20%, dropped rows show nothing
    assert np.all(masks["condition"] <= real)
    assert masks["condition"][keep == 0].sum() == 0
    kept_observed = real[keep == 1].sum()
    assert within(1.0 - masks["condition"][keep == 1].sum() / kept_observed, 0.2, kept_observed)
    # D sees observed + PM items of kept rows and everything of dropped rows
    np.testing.assert_array_equal(masks["visible"][keep == 1], (real + masks["pm"])[keep == 1])
    np.testing.assert_array_equal(masks["visible"][keep == 0], 1.0)
    again = _np(sample_masks(real, seed=seed, **ratios)["zr"])
    assert not np.array_equal(again, masks["zr"])


def test_two_noise_draws_for_one_condition_differ() -> None:
    keras.utils.set_random_seed(3)
    generator = build_generator(n_items=40, n_segments=3, hidden=16, noise_dim=4)
    profile = np.zeros((8, 40), dtype=np.float32)
    profile[:, :5] = 1.0
    segment = np.arange(8) % 3
    rng = np.random.default_rng(0)
    noise_a, noise_b = rng.standard_normal((8, 4)), rng.standard_normal((8, 4))
    first = generate(generator, profile, segment, noise_a)
    second = generate(generator, profile, segment, noise_b)
    np.testing.assert_array_equal(generate(generator, profile, segment, noise_a), first)
    # the noise modulates every hidden layer, so even an untrained generator moves with it
    assert np.mean(np.abs(first - second)) > 1e-3


def test_generator_save_load_round_trip(tmp_path: Path) -> None:
    keras.utils.set_random_seed(5)
    generator = build_generator(n_items=30, n_segments=2, hidden=8, noise_dim=3)
    path = tmp_path / "generator.keras"
    generator.save(path)
    loaded = keras.saving.load_model(path)
    rng = np.random.default_rng(1)
    inputs = {
        PROFILE: (rng.random((5, 30)) < 0.2).astype(np.float32),
        SEGMENT: np.array([0, 1, 0, 1, 1], dtype=np.int32),
        NOISE: rng.standard_normal((5, 3)).astype(np.float32),
    }
    np.testing.assert_allclose(_np(loaded(inputs)), _np(generator(inputs)), rtol=1e-6)


def test_dense_rows_densifies_only_the_requested_rows() -> None:
    matrix = sp.csr_matrix(np.array([[0, 2.0, 0], [1.0, 0, 0], [0, 0, 3.0]]))
    np.testing.assert_array_equal(dense_rows(matrix, np.array([2, 0])), [[0, 0, 1], [0, 1, 0]])


def test_label_smoothing_lowers_the_real_target() -> None:
    real = np.array([[1.5]], dtype=np.float32)
    fake = np.array([[0.0]], dtype=np.float32)
    # real target 0.9: 0.9 * -log(s(1.5)) + 0.1 * -log(1 - s(1.5)), fake term -log(1 - s(0)) = log 2
    sig = 1 / (1 + math.exp(-1.5))
    expected = 0.9 * -math.log(sig) + 0.1 * -math.log(1 - sig) + math.log(2)
    assert _np(discriminator_loss(real, fake, label_smoothing=0.1)) == pytest.approx(expected, rel=1e-6)


@pytest.mark.gpu
def test_gpu_path_trains_on_gpu0_with_the_capabilitys_policy() -> None:
    import tensorflow as tf

    from recsys.core.config import load_config
    from recsys.models.gan import build_gan, training_dataset
    from recsys.models.runtime import configure_runtime

    gpu = tf.config.list_physical_devices("GPU")[0]
    capability = tuple(tf.config.experimental.get_device_details(gpu).get("compute_capability") or (0, 0))
    try:
        strategy = configure_runtime(seed=1)
        assert keras.mixed_precision.global_policy().name == ("mixed_bfloat16" if capability >= (9, 0) else "float32")
        config = {**load_config()["augment"], "hidden": 32, "noise_dim": 4}
        with strategy.scope():
            gan = build_gan(n_items=50, n_segments=2, config=config, seed=1)
        matrix = sp.csr_matrix((np.random.default_rng(0).random((64, 50)) < 0.1).astype(np.float32))
        history = gan.fit(training_dataset(matrix, np.arange(64) % 2, np.arange(64), 16, 1), epochs=1, verbose=0)
        assert all(math.isfinite(values[-1]) for values in history.history.values())
        assert all("GPU:0" in w.value.device for w in gan.generator.trainable_weights)
        # bf16 compute, float32 scores (the output layer keeps float32 for thresholds)
        scores = gan.generator({PROFILE: matrix[:4].toarray(), SEGMENT: np.zeros(4, np.int32),
                                NOISE: np.zeros((4, 4), np.float32)})
        assert scores.dtype == tf.float32
        if capability >= (9, 0):
            assert gan.generator.get_layer("hidden2").compute_dtype == "bfloat16"
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize(("config", "schedule"), [
    ({"epochs": 20, "batch_size": 10, "min_steps": 0}, (20, 10)),     # 100 users: 10 batches an epoch
    ({"epochs": 2, "batch_size": 10, "min_steps": 55}, (6, 10)),      # raised to at least 55 batches
    ({"epochs": 20, "batch_size": 10, "min_steps": 0, "max_steps": 35}, (3, 10)),  # whole epochs that fit
    ({"epochs": 20, "batch_size": 10, "min_steps": 500, "max_steps": 4}, (1, 4)),  # one short epoch
    ({"epochs": 2, "batch_size": 10, "min_steps": 0, "max_steps": 35}, (2, 10)),   # a cap above the plan
])
def test_training_schedule_raises_to_min_steps_and_caps_at_max_steps(config: dict, schedule: tuple) -> None:
    from recsys.augmentation.stage import training_schedule

    assert training_schedule(100, config) == schedule


def test_training_dataset_ends_an_epoch_at_max_batches() -> None:
    from recsys.models.gan import training_dataset

    matrix = sp.csr_matrix(np.eye(50, 8, dtype=np.float32))
    full = list(training_dataset(matrix, np.zeros(50, int), np.arange(50), 16, 1))
    capped = list(training_dataset(matrix, np.zeros(50, int), np.arange(50), 16, 1, max_batches=2))
    assert [len(b["segment"]) for b in full] == [16, 16, 16, 2]
    assert [len(b["segment"]) for b in capped] == [16, 16]


def test_scoring_users_in_batches_gives_the_scores_of_one_pass() -> None:
    from recsys.augmentation.synthesis import score_user_batches, score_users

    train = sp.random(11, 9, density=0.3, random_state=2, format="csr", dtype=np.float32)
    generator = build_generator(9, 2, 8, 4)
    users, segments = np.array([0, 2, 3, 5, 6, 7, 8, 10]), np.arange(11) % 2
    whole = score_users(generator, train, users, segments, 3, seed=5)
    batches = list(score_user_batches(generator, train, users, segments, 3, seed=5, batch_users=3))
    assert [rows.tolist() for rows, _ in batches] == [[0, 1, 2], [3, 4, 5], [6, 7]]
    np.testing.assert_allclose(np.concatenate([scores for _, scores in batches]), whole, rtol=1e-6)
    assert not np.allclose(whole, score_users(generator, train, users, segments, 3, seed=6))  # the noise matters


def test_scoring_reads_the_profile_once_and_equals_the_whole_generator_per_draw() -> None:
    from recsys.augmentation.synthesis import score_users
    from recsys.models.gan import dense_rows, generate

    train = sp.random(11, 9, density=0.3, random_state=4, format="csr", dtype=np.float32)
    generator = build_generator(9, 2, 8, 4)
    users, segments = np.array([1, 2, 4, 9, 10]), np.arange(11) % 2
    rng = np.random.default_rng(5)  # score_users draws its noise so, one matrix per draw
    noise = [rng.standard_normal((len(users), 4)).astype(np.float32) for _ in range(3)]
    profile = dense_rows(train, users)
    expected = sum(generate(generator, profile, segments[users], draw) for draw in noise) / 3
    np.testing.assert_allclose(score_users(generator, train, users, segments, 3, seed=5), expected, rtol=1e-6)


def test_splitting_the_generator_leaves_it_savable(tmp_path: Path) -> None:
    from recsys.models.gan import split_generator

    generator = build_generator(9, 2, 8, 4)
    condition, rest = split_generator(generator)
    generator.save(tmp_path / "generator.keras")  # raised before the parts were cut from a copy
    loaded = keras.saving.load_model(tmp_path / "generator.keras", compile=False)
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in generator.layers]
    assert {layer.name for layer in condition.layers} < {layer.name for layer in generator.layers}
    assert rest.output_shape == generator.output_shape
