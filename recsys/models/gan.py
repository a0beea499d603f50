"""A conditional GAN over user interaction vectors (CFGAN family) whose generator really uses its noise.

The generator maps (observed profile, segment, noise) to a score in (0, 1) for every item. Two
conditioning modes are trained together, chosen per user row:

* user-conditioned: the condition is the user's train profile with a share of its items hidden
  (so the generator must predict items it does not see), and the generated vector is masked by the
  user's real interactions before the discriminator sees it (CFGAN's e_u masking). Partial masking
  (PM) leaves a random share of unobserved items visible as well, and zero reconstruction (ZR)
  pulls the scores of another random share of unobserved items towards 0.
* segment-only: the profile is zeroed and nothing is masked, so brand-new users can be drawn from
  (segment, noise) alone.

The published CFGAN ignores its noise and degenerates into an autoencoder. Here the noise modulates
every hidden layer (feature-wise gain and shift applied after the condition's activations are
normalised, so the condition cannot drown it), and a mode-seeking term (Mao et al., CVPR 2019)
penalises a generator whose outputs do not move when the noise does.

The scores are item probabilities: the discriminator judges a 0/1 draw from them (straight-through
gradient), as real vectors are 0/1, so scores near 1 on a few head items no longer pass for a user;
a popularity term compares the batch's generated and real item distributions, which a per-user
discriminator cannot see.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import keras
import numpy as np
import scipy.sparse as sp
import tensorflow as tf
from keras import layers, ops

PROFILE = "profile"
SEGMENT = "segment"
NOISE = "noise"
VECTOR = "vector"
REAL = "real"


def _noise_modulation(hidden: Any, noise: Any, units: int, name: str) -> Any:
    """Scale and shift normalised activations by functions of the noise (FiLM)."""
    normalised = layers.LayerNormalization(center=False, scale=False, name=f"{name}_norm")(hidden)
    gain = layers.Dense(units, bias_initializer="ones", name=f"{name}_gain")(noise)
    shift = layers.Dense(units, name=f"{name}_shift")(noise)
    modulated = layers.Add(name=f"{name}_film")([layers.Multiply()([normalised, gain]), shift])
    return layers.ReLU(name=f"{name}_relu")(modulated)


def build_generator(n_items: int, n_segments: int, hidden: int, noise_dim: int) -> keras.Model:
    """The generator G(profile, segment, noise) -> item scores in (0, 1).

    Built from stock Keras layers only, so the saved ``.keras`` file loads without custom objects.

    Args:
        n_items: catalogue size (input profile and output width).
        n_segments: number of user segments (the categorical condition).
        hidden: width of the two hidden layers.
        noise_dim: dimensions of the standard normal noise.
    """
    profile = keras.Input(shape=(n_items,), name=PROFILE)
    segment = keras.Input(shape=(), dtype="int32", name=SEGMENT)
    noise = keras.Input(shape=(noise_dim,), name=NOISE)
    h = layers.Add(name="condition")([
        layers.Dense(hidden, name="profile_in")(profile),
        layers.Embedding(n_segments, hidden, name="segment_in")(segment),
    ])
    h = _noise_modulation(h, noise, hidden, "block1")
    h = layers.Dense(hidden, name="hidden2")(h)
    h = _noise_modulation(h, noise, hidden, "block2")
    # float32 output: scores feed losses and thresholds, bf16 would round them too coarsely
    scores = layers.Dense(n_items, activation="sigmoid", dtype="float32", name="scores")(h)
    return keras.Model({PROFILE: profile, SEGMENT: segment, NOISE: noise}, scores, name="generator")


def build_discriminator(n_items: int, n_segments: int, hidden: int) -> keras.Model:
    """The discriminator D(vector, profile, segment) -> logit that the vector is a real user's."""
    vector = keras.Input(shape=(n_items,), name=VECTOR)
    profile = keras.Input(shape=(n_items,), name=PROFILE)
    segment = keras.Input(shape=(), dtype="int32", name=SEGMENT)
    h = layers.Add(name="inputs")([
        layers.Dense(hidden, name="vector_in")(vector),
        layers.Dense(hidden, use_bias=False, name="profile_in")(profile),
        layers.Embedding(n_segments, hidden, name="segment_in")(segment),
    ])
    h = layers.LeakyReLU(0.2)(h)
    h = layers.Dense(hidden, name="hidden2")(h)
    h = layers.LeakyReLU(0.2)(h)
    logit = layers.Dense(1, dtype="float32", name="logit")(h)
    return keras.Model({VECTOR: vector, PROFILE: profile, SEGMENT: segment}, logit, name="discriminator")


def sample_masks(
    real: Any,
    *,
    zr_ratio: float,
    pm_ratio: float,
    condition_dropout: float,
    profile_drop: float,
    seed: Any = None,
) -> dict[str, Any]:
    """Draw one batch's training masks; called every batch, so they are resampled every step.

    Args:
        real: batch x items, 1.0 where the user interacted.
        zr_ratio: share of each row's unobserved items in the zero-reconstruction mask.
        pm_ratio: share of each row's unobserved items partially masked (shown to D).
        condition_dropout: share of each row's observed items hidden from the condition.
        profile_drop: share of rows trained segment-only (profile zeroed, nothing masked).
        seed: a ``keras.random.SeedGenerator`` or int.

    Returns:
        ``zr`` and ``pm`` (unobserved items drawn with the given shares), ``keep`` (batch x 1, 1.0
        for user-conditioned rows), ``condition`` (the profile the generator sees) and ``visible``
        (what of a generated vector D sees: observed + PM items, or all items for segment-only rows).
    """
    real = ops.cast(real, "float32")
    shape = ops.shape(real)
    unobserved = 1.0 - real
    zr = unobserved * ops.cast(keras.random.uniform(shape, seed=seed) < zr_ratio, "float32")
    pm = unobserved * ops.cast(keras.random.uniform(shape, seed=seed) < pm_ratio, "float32")
    keep = ops.cast(keras.random.uniform((shape[0], 1), seed=seed) >= profile_drop, "float32")
    shown = ops.cast(keras.random.uniform(shape, seed=seed) >= condition_dropout, "float32")
    return {
        "zr": zr,
        "pm": pm,
        "keep": keep,
        "condition": real * shown * keep,
        "visible": keep * (real + pm) + (1.0 - keep),
    }


def discriminator_loss(real_logits: Any, fake_logits: Any, label_smoothing: float = 0.0) -> Any:
    """Binary cross-entropy of D: real vectors labelled ``1 - label_smoothing``, generated ones 0.

    One-sided label smoothing (Salimans et al., 2016) keeps D from growing arbitrarily confident on
    real users, which on a wide catalogue otherwise starves the generator of gradient.
    """
    # -log(sigmoid(x)) = softplus(-x) and -log(1 - sigmoid(x)) = softplus(x), stable for any logit
    target = 1.0 - label_smoothing
    real_term = target * ops.softplus(-real_logits) + (1.0 - target) * ops.softplus(real_logits)
    return ops.mean(real_term) + ops.mean(ops.softplus(fake_logits))


def generator_adversarial_loss(fake_logits: Any) -> Any:
    """Non-saturating generator loss: -log D(G(.)), the mean over the batch."""
    return ops.mean(ops.softplus(-fake_logits))


def zero_reconstruction_loss(scores: Any, zr_mask: Any) -> Any:
    """CFGAN's ZR term: per user, the sum of squared scores on the ZR items; mean over users."""
    return ops.mean(ops.sum(zr_mask * ops.square(scores), axis=-1))


def popularity_loss(real: Any, fake: Any, eps: float = 1e-8) -> Any:
    """KL divergence of the batch's generated item distribution from its real one.

    Each distribution is the column sums of the batch normalised to 1: how the batch's
    interactions (or scores) spread over the catalogue. A per-user discriminator cannot see a
    generator that gives every user of a segment the same few head items; this term can.
    """
    real_counts = ops.sum(real, axis=0)
    fake_counts = ops.sum(fake, axis=0)
    p = real_counts / (ops.sum(real_counts) + eps)
    q = fake_counts / (ops.sum(fake_counts) + eps)
    return ops.sum(p * (ops.log(p + eps) - ops.log(q + eps)))


def mode_seeking_loss(scores_a: Any, scores_b: Any, noise_a: Any, noise_b: Any, eps: float = 1e-5) -> Any:
    """Mode-seeking term: the inverse of how far outputs move per unit of noise moved.

    ``1 / (mean|G(c, z_a) - G(c, z_b)| / mean|z_a - z_b| + eps)``; large when two noise draws for the
    same condition give the same vector.
    """
    ratio = ops.mean(ops.abs(scores_a - scores_b)) / ops.mean(ops.abs(noise_a - noise_b))
    return 1.0 / (ratio + eps)


class ConditionalGAN(keras.Model):
    """Generator and discriminator trained together by a custom ``train_step``.

    ``fit`` takes batches ``{"real": batch x items (0/1), "segment": batch (int)}``.
    """

    def __init__(
        self,
        generator: keras.Model,
        discriminator: keras.Model,
        *,
        zr_ratio: float,
        pm_ratio: float,
        zr_weight: float,
        diversity_weight: float,
        condition_dropout: float,
        profile_drop: float,
        seed: int,
        label_smoothing: float = 0.0,
        popularity_weight: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.generator = generator
        self.discriminator = discriminator
        self.noise_dim = int(generator.input[NOISE].shape[-1])
        self.mask_args = {
            "zr_ratio": zr_ratio, "pm_ratio": pm_ratio,
            "condition_dropout": condition_dropout, "profile_drop": profile_drop,
        }
        self.zr_weight = zr_weight
        self.diversity_weight = diversity_weight
        self.label_smoothing = label_smoothing
        self.popularity_weight = popularity_weight
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.trackers = {
            name: keras.metrics.Mean(name=name) for name in ("d_loss", "g_adv", "zr", "mode_seeking", "popularity")
        }

    def compile(self, g_optimizer: keras.optimizers.Optimizer, d_optimizer: keras.optimizers.Optimizer) -> None:
        """Attach one optimizer per network."""
        super().compile()
        self.g_optimizer = g_optimizer
        self.d_optimizer = d_optimizer

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        # listed here so Keras resets them at the start of every epoch
        return list(self.trackers.values())

    def call(self, inputs: dict[str, Any], training: bool = False) -> Any:
        return self.generator(inputs, training=training)

    def train_step(self, data: dict[str, Any]) -> dict[str, Any]:
        real = tf.cast(data[REAL], "float32")
        segment = data[SEGMENT]
        masks = sample_masks(real, seed=self.seed_generator, **self.mask_args)
        batch = tf.shape(real)[0]
        noise_a = keras.random.normal((batch, self.noise_dim), seed=self.seed_generator)
        noise_b = keras.random.normal((batch, self.noise_dim), seed=self.seed_generator)
        condition = {PROFILE: masks["condition"], SEGMENT: segment}
        # the loss of a replica is a mean over its share of the batch; gradients are summed over replicas
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        # one forward pass serves both updates (simultaneous gradient steps)
        with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
            fake_a = self.generator({**condition, NOISE: noise_a}, training=True)
            fake_b = self.generator({**condition, NOISE: noise_b}, training=True)
            real_logits = self.discriminator({VECTOR: real, **condition}, training=True)
            # D judges a 0/1 draw from the scores, as real vectors are 0/1; the straight-through
            # estimator passes D's gradient to the scores as if the draw were the identity
            draw = ops.cast(keras.random.uniform(ops.shape(fake_a), seed=self.seed_generator) < fake_a, "float32")
            fake_seen = fake_a + ops.stop_gradient(draw - fake_a)
            fake_logits = self.discriminator({VECTOR: fake_seen * masks["visible"], **condition}, training=True)
            d_loss = discriminator_loss(real_logits, fake_logits, self.label_smoothing)
            g_adv = generator_adversarial_loss(fake_logits)
            zr = zero_reconstruction_loss(fake_a, masks["zr"] * masks["keep"])
            seeking = mode_seeking_loss(fake_a, fake_b, noise_a, noise_b)
            popularity = popularity_loss(real, fake_a)
            g_loss = (g_adv + self.zr_weight * zr + self.diversity_weight * seeking
                      + self.popularity_weight * popularity)
            d_scaled = d_loss / replicas
            g_scaled = g_loss / replicas
        d_weights = self.discriminator.trainable_weights
        g_weights = self.generator.trainable_weights
        self.d_optimizer.apply_gradients(zip(d_tape.gradient(d_scaled, d_weights), d_weights, strict=True))
        self.g_optimizer.apply_gradients(zip(g_tape.gradient(g_scaled, g_weights), g_weights, strict=True))
        for name, value in (("d_loss", d_loss), ("g_adv", g_adv), ("zr", zr), ("mode_seeking", seeking),
                            ("popularity", popularity)):
            self.trackers[name].update_state(value)
        return {name: tracker.result() for name, tracker in self.trackers.items()}


def dense_rows(matrix: sp.csr_matrix, rows: np.ndarray) -> np.ndarray:
    """The given CSR rows as a dense float32 0/1 block (only these rows are densified)."""
    block = matrix[rows]
    dense = np.zeros(block.shape, dtype=np.float32)
    dense[np.repeat(np.arange(len(rows)), np.diff(block.indptr)), block.indices] = 1.0
    return dense


def training_dataset(
    matrix: sp.csr_matrix, segments: np.ndarray, users: np.ndarray, batch_size: int, seed: int,
    max_batches: int | None = None,
) -> tf.data.Dataset:
    """Batches ``{"real", "segment"}`` built from CSR rows per batch, users reshuffled every epoch.

    Args:
        matrix: users x items interactions (any stored entry counts as 1).
        segments: segment of every row of ``matrix``.
        users: the rows to train on.
        batch_size: users per batch.
        seed: seeds the shuffling; each pass over the data draws a new, reproducible order.
        max_batches: an epoch ends after this many batches (default: when every user was seen).
    """
    rng = np.random.default_rng(seed)
    n_items = matrix.shape[1]

    n_batches = -(-len(users) // batch_size)
    if max_batches is not None:
        n_batches = min(n_batches, max_batches)

    def batches() -> Iterator[dict[str, np.ndarray]]:
        order = rng.permutation(users)
        for start in range(0, n_batches * batch_size, batch_size):
            rows = order[start:start + batch_size]
            yield {REAL: dense_rows(matrix, rows), SEGMENT: segments[rows].astype(np.int32)}

    signature = {
        REAL: tf.TensorSpec((None, n_items), tf.float32),
        SEGMENT: tf.TensorSpec((None,), tf.int32),
    }
    dataset = tf.data.Dataset.from_generator(batches, output_signature=signature)
    # a known length lets Keras end each epoch cleanly instead of running out of data
    return dataset.apply(tf.data.experimental.assert_cardinality(n_batches)).prefetch(2)


def build_gan(
    n_items: int, n_segments: int, config: dict[str, Any], seed: int
) -> ConditionalGAN:
    """Build and compile the GAN from the ``augment`` config section (call under the strategy's scope)."""
    gan = ConditionalGAN(
        build_generator(n_items, n_segments, int(config["hidden"]), int(config["noise_dim"])),
        build_discriminator(n_items, n_segments, int(config["hidden"])),
        zr_ratio=float(config["zr_ratio"]),
        pm_ratio=float(config["pm_ratio"]),
        zr_weight=float(config["zr_weight"]),
        diversity_weight=float(config["diversity_weight"]),
        condition_dropout=float(config["condition_dropout"]),
        profile_drop=float(config["profile_drop"]),
        label_smoothing=float(config["label_smoothing"]),
        popularity_weight=float(config["popularity_weight"]),
        seed=seed,
    )
    lr = float(config["learning_rate"])
    # beta_1 = 0.5 is the usual GAN setting: less momentum, fewer oscillations between the players;
    # a slower D keeps it from winning outright on a wide catalogue, where real and generated vectors
    # are easy to tell apart early on
    gan.compile(
        g_optimizer=keras.optimizers.Adam(learning_rate=lr, beta_1=0.5),
        d_optimizer=keras.optimizers.Adam(learning_rate=lr * float(config["d_learning_rate_ratio"]), beta_1=0.5),
    )
    return gan


def split_generator(generator: keras.Model) -> tuple[keras.Model, keras.Model]:
    """The generator cut where profile and segment meet, before any noise: ``(condition, rest)``.

    ``condition([profile, segment])`` is the ``condition`` layer's output; ``rest([that, noise])`` the scores,
    the same as the whole generator's. Scoring a user under several noise draws then reads the profile
    (an items-wide layer, half of a call's work) once. The two parts are cut from a copy with the same
    weights: models cut from the generator's own layers would leave nodes in them that break its saving.
    """
    copy = keras.models.clone_model(generator)
    copy.set_weights(generator.get_weights())
    inputs, condition = copy.input, copy.get_layer("condition").output
    return (keras.Model([inputs[PROFILE], inputs[SEGMENT]], condition, name="generator_condition"),
            keras.Model([condition, inputs[NOISE]], copy.output, name="generator_rest"))


def generate(
    generator: keras.Model, profile: np.ndarray, segment: np.ndarray, noise: np.ndarray
) -> np.ndarray:
    """Run the generator on one batch in inference mode and return float32 scores."""
    scores = generator(
        {PROFILE: profile, SEGMENT: segment.astype(np.int32), NOISE: noise.astype(np.float32)}, training=False
    )
    return np.asarray(keras.ops.convert_to_numpy(scores), dtype=np.float32)
