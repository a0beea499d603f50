"""The night's figures as StatsD gauges: read from a date's lake files, sent over UDP (``name:value|g``).

Configured by the environment: ``RECSYS_STATSD_HOST`` (unset: nothing is sent), ``RECSYS_STATSD_PORT``
(default 8125) and ``RECSYS_STATSD_PREFIX`` (default ``recsys``). No StatsD client library: a gauge is one
line of text in a datagram, and a lost datagram costs one point on a dashboard, never a job.
"""

from __future__ import annotations

import logging
import math
import os
import re
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys.core.lake import METRICS_FILE, RECONCILIATION_FILE, REGISTRATION_FILE, STATS_FILE, Lake, read_json

HOST_VAR, PORT_VAR, PREFIX_VAR = "RECSYS_STATSD_HOST", "RECSYS_STATSD_PORT", "RECSYS_STATSD_PREFIX"
DEFAULT_PORT, DEFAULT_PREFIX = 8125, "recsys"
NDCG = "ndcg@10"  # the headline metric of the dashboards, as evaluate names it in metrics.json
PACKET_BYTES = 512  # gauges are batched into datagrams up to this size: never fragmented on any network
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")  # ':', '|', '@' and spaces break the line protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StatsdTarget:
    """Where gauges go: the StatsD server's host and UDP port, and the prefix of every name."""

    host: str
    port: int = DEFAULT_PORT
    prefix: str = DEFAULT_PREFIX


def statsd_target(env: Mapping[str, str] | None = None) -> StatsdTarget | None:
    """The StatsD target the environment configures, or ``None`` when ``RECSYS_STATSD_HOST`` is unset or empty.

    Raises:
        ValueError: ``RECSYS_STATSD_PORT`` is not a port number.
    """
    env = os.environ if env is None else env
    host = env.get(HOST_VAR, "").strip()
    if not host:
        return None
    port = env.get(PORT_VAR, "").strip() or str(DEFAULT_PORT)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{PORT_VAR} must be a UDP port number, got {port!r}")
    return StatsdTarget(host, int(port), env.get(PREFIX_VAR, "").strip() or DEFAULT_PREFIX)


def metric_name(*parts: str) -> str:
    """A StatsD-safe dotted name: characters the line protocol reserves become ``_`` (``ndcg@10`` -> ``ndcg_10``)."""
    return ".".join(_UNSAFE.sub("_", str(part)).strip("_") for part in parts if str(part))


def gauge_lines(gauges: Mapping[str, float], prefix: str) -> list[str]:
    """The StatsD lines of ``gauges``, each ``<prefix>.<name>:<value>|g``.

    A StatsD gauge written with a sign is a change, not a value, so a negative value is sent as a reset to 0
    followed by the signed change. Values that are not finite are left out (StatsD cannot hold them).
    """
    lines = []
    for name, value in gauges.items():
        value = float(value)
        if not math.isfinite(value):
            log.warning("gauge %s is %s; not sent", name, value)
            continue
        full = metric_name(prefix, name)
        text = f"{value:.10g}"
        lines += [f"{full}:0|g", f"{full}:{text}|g"] if value < 0 else [f"{full}:{text}|g"]
    return lines


def _packets(lines: list[str]) -> Iterator[bytes]:
    """The lines joined by newlines into datagrams of at most ``PACKET_BYTES`` (a longer line alone)."""
    packet = b""
    for line in lines:
        data = line.encode()
        if packet and len(packet) + 1 + len(data) > PACKET_BYTES:
            yield packet
            packet = b""
        packet = packet + b"\n" + data if packet else data
    if packet:
        yield packet


def send_gauges(gauges: Mapping[str, float], host: str, port: int = DEFAULT_PORT, prefix: str = DEFAULT_PREFIX) -> int:
    """Send gauges to a StatsD server over UDP.

    Args:
        gauges: values by name relative to the prefix, e.g. ``{"clean.input": 1200}``.
        host: the StatsD server's host name or address.
        port: its UDP port.
        prefix: the first part of every name (``recsys`` gives ``recsys.clean.input``).

    Returns:
        The number of datagrams sent.

    Raises:
        OSError: the host does not resolve or the socket refuses the send (UDP has no answer to wait for).
    """
    lines = gauge_lines(gauges, prefix)
    if not lines:
        return 0
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
    sent = 0
    with socket.socket(family, kind, proto) as sock:
        for packet in _packets(lines):
            sock.sendto(packet, address)
            sent += 1
    return sent


def _read(path: Path) -> dict[str, Any]:
    return read_json(path) if path.is_file() else {}


def _number(value: Any) -> float | None:
    """A gauge value from a JSON value: numbers and booleans (1/0) and numeric strings (a model version)."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def night_gauges(lake: Lake, ds: str) -> dict[str, float]:
    """The figures of one night, read from the date's lake files, by gauge name (without the prefix).

    - ``clean.{input,clean,duplicates,quarantined}`` and ``clean.quarantined.<reason>``:
      ``clean/ds=D/_reconciliation.json``;
    - ``tables.{users,items,interactions}`` and ``tables.interactions.<split>``: ``tables/ds=D/_stats.json``;
    - ``eval.<model>.ndcg_10`` (all users) and ``eval.<model>.sparse.ndcg_10`` for the model, EASE and every
      other scored model; ``eval.lift.<segment>`` with ``.low``/``.high``, the augmentation lift and its 95%
      interval; ``eval.cold.<view>.<reference>`` with bounds, the cold-start lifts: ``eval/ds=D/metrics.json``;
    - ``registry.{version,champion,promoted}``: ``registry/ds=D/registration.json``.

    A file that is missing (its stage has not run, or is switched off) and a value that is null (a lift whose
    reference scored 0) give no gauge, so a dashboard shows a gap rather than a false zero.
    """
    gauges: dict[str, float | None] = {}
    clean = _read(lake.path("clean", ds) / RECONCILIATION_FILE)
    for key in ("input", "clean", "duplicates", "quarantined"):
        gauges[f"clean.{key}"] = _number(clean.get(key))
    for reason, count in clean.get("by_reason", {}).items():
        gauges[metric_name("clean.quarantined", reason)] = _number(count)

    stats = _read(lake.path("tables", ds) / STATS_FILE)
    gauges["tables.users"], gauges["tables.items"] = _number(stats.get("users")), _number(stats.get("items"))
    for split, count in stats.get("interactions", {}).items():
        gauges["tables.interactions" if split == "total" else f"tables.interactions.{split}"] = _number(count)

    metrics = _read(lake.path("eval", ds) / METRICS_FILE)
    for model, segments in metrics.get("models", {}).items():
        gauges[metric_name("eval", model, NDCG)] = _number(segments.get("all", {}).get(NDCG))
        gauges[metric_name("eval", model, "sparse", NDCG)] = _number(segments.get("sparse", {}).get(NDCG))
    augmentation = metrics.get("augmentation", {})
    for segment in ("all", "sparse"):
        for end, suffix in (("", ""), ("_low", ".low"), ("_high", ".high")):
            gauges[f"eval.lift.{segment}{suffix}"] = _number(augmentation.get(f"lift_{segment}{end}"))
    for view, lifts in (metrics.get("cold_start") or {}).get("lifts", {}).items():
        for reference, lift in lifts.items():
            gauges[metric_name("eval.cold", view, reference)] = _number(lift.get("lift"))
            for bound in ("low", "high"):
                gauges[metric_name("eval.cold", view, reference, bound)] = _number(lift.get(bound))

    registration = _read(lake.path("registry", ds) / REGISTRATION_FILE)
    gauges["registry.version"] = _number(registration.get("version"))
    gauges["registry.champion"] = _number(registration.get("champion"))
    gauges["registry.promoted"] = _number(registration.get("gate", {}).get("promoted"))
    return {name: value for name, value in gauges.items() if value is not None}


def send_configured(gauges: Mapping[str, float], env: Mapping[str, str] | None = None) -> int:
    """Send gauges to the StatsD target the environment configures; never raises.

    Metrics are for dashboards: an unreachable or misconfigured StatsD server is logged as a warning and
    never fails the job that reports to it.

    Returns:
        The number of gauges sent: 0 without a target or when the send failed.
    """
    try:
        target = statsd_target(env)
        if target is None:
            return 0
        send_gauges(gauges, target.host, target.port, target.prefix)
    except (OSError, ValueError) as err:
        log.warning("statsd gauges not sent: %s", err)
        return 0
    log.info("sent %d gauges to statsd %s:%d as %s.*", len(gauges), target.host, target.port, target.prefix)
    return len(gauges)


def send_night_gauges(lake: Lake, ds: str, env: Mapping[str, str] | None = None) -> int:
    """Send :func:`night_gauges` of ``ds`` when ``RECSYS_STATSD_HOST`` is set (the end of the report job).

    Returns:
        The number of gauges sent (0 when StatsD is off or unreachable).
    """
    env = os.environ if env is None else env
    if not env.get(HOST_VAR, "").strip():
        return 0
    return send_configured(night_gauges(lake, ds), env)
