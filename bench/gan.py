"""Benchmark: wall time of the whole GAN augment stage (train, generate, quality) on planted synthetic data.

Builds a users x items matrix with planted taste groups, Zipf item popularity and long-tailed history
lengths (defaults: 6,000 x 3,700, MovieLens-1M scale), holds out 10% of each user's items as validation,
runs ``jobs.augment.augment`` with the committed ``augment`` config (flags override a few knobs) and
prints one JSON line last: device, users, items, epoch_s, user_vectors_per_s, stage_s against the
target, the stage's CPU seconds, peak resident memory, the load average at the end, the JS figures (with
their floor: as many real users drawn at random), and on a GPU the model FLOP utilisation estimated
from the layer sizes.
Run: ``python -m bench.gan [--users N] [--items N] [--epochs E] [--batch-size B] [--set augment.key=value]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import time
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.core.config import load_config

log = logging.getLogger("bench.gan")
TARGET_S = 300.0  # the whole stage at 6,000 x 3,700 on the project's 2-core CPU machine
# dense bf16 peak FLOP/s without sparsity, by a substring of the GPU's name (MFU denominators)
PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12}


def planted_interactions(
    n_users: int, n_items: int, tastes: int, mean_length: float, rng: np.random.Generator
) -> sp.csr_matrix:
    """Users x items 0/1 CSR: each user has a taste group whose items take 80% of its draws.

    Item popularity is Zipf (exponent 1) within a group and over the catalogue; history lengths are
    log-normal with the given mean (at least 5, at most a quarter of the catalogue).
    """
    group_of_item = rng.integers(0, tastes, n_items)
    zipf = 1.0 / np.arange(1, n_items + 1)
    popularity = zipf[rng.permutation(n_items)]
    sigma = 0.9
    lengths = rng.lognormal(np.log(mean_length) - sigma**2 / 2, sigma, n_users)
    lengths = np.clip(lengths, 5, n_items // 4).astype(np.int64)
    user_group = rng.integers(0, tastes, n_users)
    users = np.repeat(np.arange(n_users), lengths)
    in_taste = rng.random(users.size) < 0.8
    items = np.empty(users.size, dtype=np.int64)
    global_cdf = np.cumsum(popularity) / popularity.sum()
    items[~in_taste] = np.searchsorted(global_cdf, rng.random(int((~in_taste).sum())), side="right")
    for g in range(tastes):
        members = np.flatnonzero(group_of_item == g)
        cdf = np.cumsum(popularity[members]) / popularity[members].sum()
        draw = in_taste & (user_group[users] == g)
        items[draw] = members[np.searchsorted(cdf, rng.random(int(draw.sum())), side="right")]
    keys = np.unique(users * n_items + np.minimum(items, n_items - 1))
    rows, cols = keys // n_items, keys % n_items
    return sp.csr_matrix((np.ones(keys.size, np.float32), (rows, cols)), shape=(n_users, n_items))


def split_valid(matrix: sp.csr_matrix, share: float, rng: np.random.Generator) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Hold out a random ``share`` of the stored entries as validation; users keep at least one train item."""
    coo = matrix.tocoo()
    held = rng.random(coo.nnz) < share
    first = np.r_[True, coo.row[1:] != coo.row[:-1]]  # CSR order: each user's first entry stays in train
    held &= ~first
    def part(mask: np.ndarray) -> sp.csr_matrix:
        return sp.csr_matrix((coo.data[mask], (coo.row[mask], coo.col[mask])), shape=matrix.shape)
    return part(~held), part(held)


def flops_per_user_vector(n_items: int, hidden: int, noise_dim: int) -> float:
    """Training FLOPs per user row and step, from the dense layer sizes of recsys.models.gan.

    A step runs G twice (two noise draws) and D twice (real, generated); a backward pass costs about
    twice its forward pass, so each forward pass counts three times (the 6N rule for 2N-FLOP matmuls).
    """
    generator = 2 * (n_items * hidden + hidden * hidden + hidden * n_items + 4 * noise_dim * hidden)
    discriminator = 2 * (2 * n_items * hidden + hidden * hidden + hidden)
    return 3.0 * (2 * generator + 2 * discriminator)


def device_name() -> str:
    """The GPU TensorFlow trains on, or "CPU"."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "CPU"
    return str(tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=6_000)
    parser.add_argument("--items", type=int, default=3_700)
    parser.add_argument("--mean-length", type=float, default=95.0, help="mean items per user (ML-1M positives: ~95)")
    parser.add_argument("--tastes", type=int, default=18)
    parser.add_argument("--epochs", type=int, help="override augment.epochs")
    parser.add_argument("--threads", type=int, help="TensorFlow intra-op threads (default: all cores)")
    parser.add_argument("--batch-size", type=int, help="override augment.batch_size")
    parser.add_argument("--set", action="append", default=[], metavar="augment.key=value",
                        help="any other config override")
    parser.add_argument("--peak-tflops", type=float, help="device peak for MFU (default: by GPU name)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    overrides = list(args.set)
    if args.epochs:
        overrides.append(f"augment.epochs={args.epochs}")
    if args.batch_size:
        overrides.append(f"augment.batch_size={args.batch_size}")
    config = load_config(overrides)
    rng = np.random.default_rng(config["seed"])
    matrix = planted_interactions(args.users, args.items, args.tastes, args.mean_length, rng)
    train, valid = split_valid(matrix, 0.1, rng)
    log.info("planted %d users x %d items, %d train / %d valid interactions",
             args.users, args.items, train.nnz, valid.nnz)

    from recsys.augmentation.stage import augment  # TensorFlow loads here, after the data are built

    if args.threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    device = device_name()
    started, cpu_started = time.perf_counter(), time.process_time()
    result = augment(train, valid, config["augment"], int(config["seed"]))
    stage_s = time.perf_counter() - started
    # CPU seconds of this process: on a shared machine, wall time alone hides how loaded it was
    stage_cpu_s = time.process_time() - cpu_started
    training: dict[str, Any] = result.quality["training"]
    aug = config["augment"]
    epoch_s = training["seconds"] / training["epochs"]
    vectors_per_s = training["users"] * training["epochs"] / training["seconds"]
    report: dict[str, Any] = {
        "device": device,
        "users": args.users,
        "items": args.items,
        "interactions": int(train.nnz),
        "epochs": training["epochs"],
        "batch_size": int(aug["batch_size"]),
        "hidden": int(aug["hidden"]),
        "epoch_s": round(epoch_s, 3),
        "user_vectors_per_s": round(vectors_per_s, 1),
        "fit_s": training["seconds"],
        "stage_s": round(stage_s, 1),
        "stage_cpu_s": round(stage_cpu_s, 1),
        # ru_maxrss is in KiB on Linux: the peak of the whole process, data and TensorFlow included
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "target_stage_s": TARGET_S,
        "meets_target": stage_s <= TARGET_S,
        "js_item_popularity": result.quality["fidelity"]["js_item_popularity"],
        "js_user_length": result.quality["fidelity"]["js_user_length"],
        "js_real_sample": {key: value for key, value in result.quality["fidelity"]["real_sample"].items()
                           if key.startswith("js_")},
    }
    if device != "CPU":
        peak = args.peak_tflops * 1e12 if args.peak_tflops else next(
            (value for key, value in PEAK_FLOPS.items() if key in device), None)
        achieved = vectors_per_s * flops_per_user_vector(args.items, int(aug["hidden"]), int(aug["noise_dim"]))
        report["model_tflops_per_s"] = round(achieved / 1e12, 2)
        report["mfu"] = round(achieved / peak, 4) if peak else None
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
