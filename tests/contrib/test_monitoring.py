"""The shipped monitoring: Prometheus alert rules (checked and unit-tested with ``promtool``)
and the Grafana dashboard (its structure, and that every series it and the rules use is one
vpsnap exports)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from vpsnap.metrics import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "contrib" / "prometheus" / "alerts.yml"
ALERT_TESTS = Path(__file__).with_name("alerts_test.yml")
DASHBOARD = ROOT / "contrib" / "grafana" / "vpsnap.json"

# Per-node series of scale-out (the agents' heartbeats and queues), exported by the processes
# of docs/scale-out.md; the rules and the dashboard use them already.
SCALE_OUT_SERIES = {
    "vpsnap_node_last_seen_seconds",
    "vpsnap_node_drained",
    "vpsnap_jobs_queued",
    "vpsnap_job_oldest_queued_seconds",
}
# Prometheus' own (`up`) and the process collector's, which every exporter has.
OTHER_SERIES = {"up", "process_resident_memory_bytes", "process_cpu_seconds_total"}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        print("\n!! promtool is missing: scripts/install installs it (Debian package prometheus)")
        pytest.skip("promtool is not installed")
    return path


def exported_series() -> set[str]:
    suffixes = {"histogram": ("_bucket", "_count", "_sum"), "counter": ("_total",)}
    names: set[str] = set()
    for metric in REGISTRY.collect():
        names.add(metric.name)
        names.update(metric.name + suffix for suffix in suffixes.get(metric.type, ()))
        names.update(sample.name for sample in metric.samples)
    return names | SCALE_OUT_SERIES | OTHER_SERIES


def series_in(expr: str) -> set[str]:
    """Metric names an expression reads (words followed by a selector, or bare ones that are
    no PromQL function or keyword)."""
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    without_labels = re.sub(r"\{[^}]*\}", "", without_strings)
    words = set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b", without_labels))
    return {w for w in words if w.startswith(("vpsnap_", "process_")) or w == "up"}


def test_the_alert_rules_are_valid() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_alerts_fire_when_they_should() -> None:
    result = subprocess.run(
        [promtool(), "test", "rules", str(ALERT_TESTS)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_alerts_cover_what_breaks_hosts() -> None:
    rules = yaml.safe_load(ALERTS.read_text())
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"]}
    for needed in (
        "VpsnapDataStoreNearlyFull",
        "VpsnapQueueStuck",
        "VpsnapJobsFailing",
        "VpsnapNodeOffline",
    ):
        assert needed in alerts
    known = exported_series()
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"], name
        unknown = series_in(rule["expr"]) - known
        assert not unknown, f"{name} reads series nobody exports: {unknown}"


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def test_the_dashboard_is_a_grafana_dashboard() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    for key in ("uid", "title", "schemaVersion", "panels", "templating", "time"):
        assert key in dashboard, key
    assert isinstance(dashboard["schemaVersion"], int)
    assert dashboard["schemaVersion"] >= 36
    assert re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", dashboard["uid"])
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"

    panels = _panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    boxes: list[tuple[int, int, int, int, str]] = []
    known = exported_series()
    for panel in panels:
        grid = panel["gridPos"]
        assert all(isinstance(grid[k], int) for k in ("x", "y", "w", "h")), panel["title"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        assert grid["w"] > 0 and grid["h"] > 0, panel["title"]
        boxes.append((grid["x"], grid["y"], grid["w"], grid["h"], panel["title"]))
        if panel["type"] == "row":
            continue
        assert panel["type"] in {"timeseries", "stat", "bargauge", "table", "gauge"}
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            unknown = series_in(target["expr"]) - known
            assert not unknown, f"{panel['title']} reads series nobody exports: {unknown}"
    for index, (x, y, w, h, title) in enumerate(boxes):
        for x2, y2, w2, h2, other in boxes[index + 1 :]:
            overlaps = x < x2 + w2 and x2 < x + w and y < y2 + h2 and y2 < y + h
            assert not overlaps, f"{title} overlaps {other}"


def test_the_dashboard_shows_the_series_of_the_issue() -> None:
    text = DASHBOARD.read_text()
    for series in (
        "vpsnap_data_store_free_bytes",
        "vpsnap_vps_allocated_bytes",
        "vpsnap_jobs_queued",
        "vpsnap_job_oldest_queued_seconds",
        "vpsnap_job_failures_total",
        "vpsnap_webhook_deliveries_total",
        "vpsnap_rate_limited_requests_total",
        "vpsnap_build_info",
    ):
        assert series in text, series
