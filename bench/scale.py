"""Benchmark: the nightly pipeline, clean through publish, on a large synthetic catalogue with capped training.

Generates ``--events`` synthetic events over ``--items`` items (``jobs.generate``; cached under
``.recsys/bench/scale-<events>-<items>``, reused when present), then runs the pipeline's jobs for the last
date, each in a fresh process as Airflow runs them: clean, tables, augment, expand, train, evaluate,
register, publish. The GAN and the recommender train at most ``--gan-steps`` / ``--train-steps`` batches
(``augment.max_steps``, ``train.max_steps``) so training does not set the run's length; everything else runs
with the committed defaults (validation and evaluation rank their seeded samples, ``train.valid_max_users``
and ``evaluate.max_users``). What is left grows with users x items: at 1M events x 100k items the run takes
over an hour on this machine's two cores, at 10M x 200k about two (bench/RESULTS.md). The catalogue and text
stages are left out (``content.enabled`` off, ``evaluate.cold_item_share`` 0): their cost is ``bench/embed.py``'s.

Prints per stage the wall time and the peak resident memory of its process tree (the Spark JVM included),
the seconds per training step of the GAN and of the recommender (validation excluded), the saved models'
sizes, which stage dominates, and the full training extrapolated from the per-step figures: an epoch is
``ceil(users / batch_size)`` steps, a night's training ``train.epochs`` epochs at most per fit (three fits:
the model, its ablation and the whole-window refit; with the sampled objective two more for the negatives'
ablation) and the GAN's ``training_schedule`` uncapped. ``extrapolated_gpu_s`` stays null: no device ran
it, and scaling by FLOP rates would mislead (see ``cpu_tflops``). The last line is one JSON object.
Run: ``python -m bench.scale --events 1000000 --items 100000``; the 200k-item run:
``python -m bench.scale --events 10000000 --items 200000 --users 50000 --gan-steps 20 --train-steps 50``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from typing import Any

from bench.data_layer import PeakRss, bench_lake
from recsys.core.config import REPO_ROOT, load_config
from recsys.core.lake import (
    FINAL_MODEL_FILE,
    ITEMS_FILE,
    METRICS_FILE,
    MODEL_FILE,
    NOAUG_MODEL_FILE,
    QUALITY_FILE,
    STATS_FILE,
    TRAIN_FACTS_FILE,
    Lake,
    read_json,
)

log = logging.getLogger("bench.scale")
STAGES = ("clean", "tables", "augment", "expand", "train", "evaluate", "register", "publish")
MODEL_FILES = (MODEL_FILE, NOAUG_MODEL_FILE, FINAL_MODEL_FILE)
MIB = 2**20


def scale_lake(events: int, items: int, users: int, days: int) -> Lake:
    """The cached lake of ``events`` synthetic events over ``items`` items, generated on first use."""
    return bench_lake(events, days, f"scale-{events}-{items}-{users}-{days}", users, items)


def stage_env(lake: Lake, gan_steps: int, train_steps: int) -> dict[str, str]:
    """The jobs' environment: the capped training, no text stages, MLflow beside the bench's lake."""
    home = lake.root.parent
    return {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
        "RECSYS_MLFLOW_ARTIFACTS": str(home / "mlflow-artifacts"),
        "RECSYS__AUGMENT__MAX_STEPS": str(gan_steps),
        "RECSYS__TRAIN__MAX_STEPS": str(train_steps),
        "RECSYS__CONTENT__ENABLED": "false",
        "RECSYS__EVALUATE__COLD_ITEM_SHARE": "0",
    }


def run_stage(stage: str, lake: Lake, ds: str, env: dict[str, str]) -> dict[str, Any]:
    """Run ``jobs.<stage>`` for ``ds`` in a fresh process; its wall seconds and peak RSS (MiB)."""
    command = [sys.executable, "-m", f"jobs.{stage}", "--ds", ds, "--lake", str(lake.root)]
    log.info("stage %s: %s", stage, " ".join(command))
    with PeakRss(every_s=0.5) as rss:
        started = time.perf_counter()
        subprocess.run(command, cwd=REPO_ROOT, env=env, check=True)
        seconds = time.perf_counter() - started
    result = {"s": round(seconds, 1), "peak_rss_mib": round(rss.peak / MIB)}
    log.info("stage %s: %s", stage, result)
    return result


def per_step(seconds: float, steps: int) -> float | None:
    return round(seconds / steps, 4) if steps else None


def model_items(lake: Lake, ds: str) -> int:
    """The width of the date's models: every item of the tables' index (catalogue items included)."""
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(lake.path("tables", ds) / ITEMS_FILE).metadata.num_rows)


def training_figures(lake: Lake, ds: str, config: dict[str, Any]) -> dict[str, Any]:
    """Per-step times of both trainings, from train.json and quality.json, and the uncapped extrapolation.

    ``cpu_tflops`` is the recommender's dense-layer work per second of a step: far below the CPU's peak
    when a step's time goes to building dense batches from CSR rows and to the catalogue-wide softmax.
    """
    from recsys.augmentation.stage import training_schedule

    facts = read_json(lake.path("models", ds) / TRAIN_FACTS_FILE)
    model = facts["models"]["model"]
    train_step_s = per_step(model["step_seconds"], model["steps"])
    fits = 3 + (2 if model["objective"] == "sampled" else 0)
    epochs = int(config["train"]["epochs"])
    gan = read_json(lake.path("augment", ds) / QUALITY_FILE)["training"]
    gan_step_s = per_step(gan["seconds"], gan["steps"])  # the fit's seconds, first-step tracing included
    gan_epochs, gan_batches = training_schedule(gan["users"], {**config["augment"], "max_steps": 0})
    train_epoch_s = train_step_s * model["steps_per_epoch"] if train_step_s else None
    figures: dict[str, Any] = {
        "recommender": {
            "objective": model["objective"], "steps": model["steps"], "steps_per_epoch": model["steps_per_epoch"],
            "step_s": train_step_s, "epoch_s": round(train_epoch_s, 1) if train_epoch_s else None,
            "fits": fits, "ease_items": facts.get("ease_items"),
            "valid_ndcg@10": model["best_valid_ndcg@10"],
            "negatives_ablation_valid_ndcg@10": model.get("negatives_ablation_valid_ndcg@10"),
        },
        "gan": {"steps": gan["steps"], "step_s": gan_step_s, "uncapped_steps": gan_epochs * gan_batches},
        "extrapolated_cpu_s": {
            "recommender_per_fit_upper": round(train_epoch_s * epochs) if train_epoch_s else None,
            "recommender_night_upper": round(train_epoch_s * epochs * fits) if train_epoch_s else None,
            "gan": round(gan_step_s * gan_epochs * gan_batches) if gan_step_s else None,
            "epochs_per_fit_upper": epochs,
        },
    }
    # the two dense layers (items x hidden each way) forward and backward: 3 x 2 x 2 x batch x hidden x items
    flops = 12 * int(config["train"]["batch_size"]) * int(config["train"]["hidden"]) * model_items(lake, ds)
    cpu_tflops = flops / train_step_s / 1e12 if train_step_s else None
    figures["recommender"].update({"dense_flops_per_step": flops,
                                   "cpu_tflops": round(cpu_tflops, 4) if cpu_tflops else None})
    # no device in this run: a FLOP ratio would mislead, the step is far from compute-bound here (cpu_tflops)
    figures["extrapolated_gpu_s"] = None
    return figures


def model_sizes(lake: Lake, ds: str) -> dict[str, float]:
    """Each saved recommender's file size in MiB."""
    folder = lake.path("models", ds)
    return {name: round((folder / name).stat().st_size / MIB, 1) for name in MODEL_FILES if (folder / name).exists()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="synthetic events (default 1,000,000)")
    parser.add_argument("--items", type=int, default=100_000, help="items at the start (default 100,000)")
    parser.add_argument("--users", type=int, default=None, help="users at the start (default events / 50)")
    parser.add_argument("--days", type=int, default=14, help="daily partitions (default 14)")
    parser.add_argument("--gan-steps", type=int, default=50, help="augment.max_steps (default 50)")
    parser.add_argument("--train-steps", type=int, default=100, help="train.max_steps per fit (default 100)")
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated stages to run (default all)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    users = args.users or max(2000, args.events // 50)
    generated = time.perf_counter()
    lake = scale_lake(args.events, args.items, users, args.days)
    generate_s = time.perf_counter() - generated
    ds = lake.source()["last_date"]
    env = stage_env(lake, args.gan_steps, args.train_steps)
    stages = {stage: run_stage(stage, lake, ds, env) for stage in args.stages.split(",")}
    config = load_config()
    stats = read_json(lake.path("tables", ds) / STATS_FILE)
    result: dict[str, Any] = {
        "events": args.events, "items_generated": args.items, "users_generated": users, "ds": ds,
        "generate_s": round(generate_s, 1),
        "interactions": stats.get("interactions", {}).get("total"),
        "users": stats.get("users"), "items": stats.get("items"),
        "stages": stages,
        "dominant_stage": max(stages, key=lambda s: stages[s]["s"]),
        "total_s": round(sum(s["s"] for s in stages.values()), 1),
        "peak_rss_mib": max(s["peak_rss_mib"] for s in stages.values()),
        "capped": {"gan_steps": args.gan_steps, "train_steps": args.train_steps},
        "cpus": os.cpu_count(),
    }
    if "train" in stages:
        result.update(training_figures(lake, ds, config))
        result["model_file_mib"] = model_sizes(lake, ds)
    if "evaluate" in stages:
        models = read_json(lake.path("eval", ds) / METRICS_FILE)["models"]
        result["test_ndcg@10"] = {name: round(m["all"]["ndcg@10"], 4) for name, m in models.items()}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
