"""The docker/ files are validated here (no Docker engine runs on CI): they parse and refer to real paths."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def test_dockerfile_copies_only_existing_paths_and_pins_python() -> None:
    text = (REPO / "docker" / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11", text, re.M)
    copied = re.findall(r"^COPY (\S+) ", text, re.M)
    assert copied and all((REPO / src).exists() for src in copied), copied


def test_compose_services_use_the_image_and_bind_loopback() -> None:
    compose = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "scheduler", "api-server", "dag-processor", "mlflow", "spark-master", "spark-worker"} <= set(services)
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    assert (REPO / compose["x-recsys"]["env_file"].replace("../", "")).exists()
