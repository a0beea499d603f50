"""Pick the TensorFlow device setup once per job: seeds, determinism, precision and strategy."""

from __future__ import annotations

import logging

import keras
import tensorflow as tf

log = logging.getLogger(__name__)


def configure_runtime(seed: int) -> tf.distribute.Strategy:
    """Seed every generator and choose precision and distribution for the devices TensorFlow sees.

    On the CPU, op determinism is switched on so a fixed seed gives identical results. On GPUs,
    determinism is left off (some GPU kernels have no deterministic variant, and speed is why one
    is there); compute capability 9.0 and above trains in bf16 (no loss scaling needed), and more
    than one GPU trains data-parallel with ``MirroredStrategy``.

    Args:
        seed: seeds Python, NumPy, TensorFlow and Keras.

    Returns:
        The strategy to build and fit models under.
    """
    keras.utils.set_random_seed(seed)
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        tf.config.experimental.enable_op_determinism()
        keras.mixed_precision.set_global_policy("float32")
        log.info("runtime: CPU, float32, deterministic ops")
        return tf.distribute.get_strategy()
    capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability") or (0, 0)
    policy = "mixed_bfloat16" if tuple(capability) >= (9, 0) else "float32"
    keras.mixed_precision.set_global_policy(policy)
    strategy = tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    log.info("runtime: %d GPU(s), compute capability %s, policy %s", len(gpus), capability, policy)
    return strategy
