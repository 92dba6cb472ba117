"""Specifies deploy/grafana: the provisioning files, the four dashboards and their generated catalogue."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from faust.sensors.prometheus import FaustMetrics
from prometheus_client import CollectorRegistry

from stream.dashboards import (
    CATALOGUE_FILE,
    DASHBOARDS_FOLDER,
    Dashboard,
    annotation_queries,
    expand_variables,
    family_name,
    intro_of,
    iter_panels,
    load_dashboards,
    metric_names,
    panel_catalogue,
    render_catalogue,
)
from stream.metrics import metrics_catalogue

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARDS = load_dashboards(ROOT / DASHBOARDS_FOLDER)
WINDOWS = ["1h", "24h", "7d", "30d", "day", "month"]
TITLES = [
    "leadlag — Leading vs lagging",
    "leadlag — Funnel",
    "leadlag — Revenue",
    "leadlag — Pipeline health",
]


def by_title(title: str) -> Dashboard:
    return next(d for d in DASHBOARDS if d["title"] == title)


def variable(dashboard: Dashboard, name: str) -> dict[str, Any]:
    return next(v for v in dashboard["templating"]["list"] if v["name"] == name)


def faust_series_names() -> set[str]:
    """The series Faust's Prometheus sensor exposes under the worker's `leadlag_faust` prefix."""
    registry = CollectorRegistry()
    FaustMetrics.create(registry, "leadlag_faust")
    names: set[str] = set()
    for family in registry.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(f"{family.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
    return names


def test_the_readme_catalogue_is_what_the_dashboards_generate() -> None:
    committed = (ROOT / CATALOGUE_FILE).read_text(encoding="utf-8")
    assert committed == render_catalogue(DASHBOARDS, intro_of(committed)), "run python -m stream.dashboards --write"


def test_the_four_dashboards_load_in_reading_order_with_unique_fixed_uids() -> None:
    assert [d["title"] for d in DASHBOARDS] == TITLES
    uids = [d["uid"] for d in DASHBOARDS]
    assert uids == ["leadlag-leading-lagging", "leadlag-funnel", "leadlag-revenue", "leadlag-pipeline-health"]
    assert all(d["schemaVersion"] == 39 for d in DASHBOARDS)


@pytest.mark.parametrize("title", TITLES)
def test_every_dashboard_has_the_datasource_channel_and_window_variables(title: str) -> None:
    dashboard = by_title(title)
    datasource = variable(dashboard, "datasource")
    assert (datasource["type"], datasource["query"]) == ("datasource", "prometheus")
    channel = variable(dashboard, "channel")
    assert channel["type"] == "query"
    assert channel["query"]["query"] == "label_values(leadlag_sessions, channel)"
    window = variable(dashboard, "window")
    assert window["type"] == "custom"
    assert window["query"].split(",") == WINDOWS
    assert [option["value"] for option in window["options"]] == WINDOWS


@pytest.mark.parametrize("title", TITLES)
def test_every_panel_queries_prometheus_through_the_datasource_variable_with_a_unit(title: str) -> None:
    panels = list(iter_panels(by_title(title)))
    assert len(panels) >= 8
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["fieldConfig"]["defaults"]["unit"], f"{panel['title']} has no unit"
        assert panel["targets"], f"{panel['title']} has no target"
        for target in panel["targets"]:
            assert target["expr"].strip(), f"{panel['title']} has an empty expr"
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


@pytest.mark.parametrize("title", TITLES)
def test_panel_ids_are_unique_and_panels_do_not_overlap(title: str) -> None:
    dashboard = by_title(title)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        area = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not cells & area, f"{panel['title']} overlaps another panel"
        cells |= area


def test_every_leadlag_metric_a_query_reads_is_one_the_worker_exposes() -> None:
    catalogue = metrics_catalogue()
    histograms = [spec.name for spec in catalogue if spec.type == "histogram"]
    known = {spec.name for spec in catalogue} | faust_series_names()
    exprs = [entry.expr for entry in panel_catalogue(DASHBOARDS)]
    exprs += [expr for dashboard in DASHBOARDS for _, expr in annotation_queries(dashboard)]
    read = {family_name(name, histograms) for expr in exprs for name in metric_names(expr)}
    assert read - known == set()
    assert "leadlag_time_to_stage_seconds" in read  # histogram quantiles read the _bucket series
    assert any(name.startswith("leadlag_faust_") for name in read)


def test_every_query_parses_as_promql_once_grafana_variables_are_filled_in(tmp_path: Path) -> None:
    exprs = [entry.expr for entry in panel_catalogue(DASHBOARDS)]
    exprs += [expr for dashboard in DASHBOARDS for _, expr in annotation_queries(dashboard)]
    records = [{"record": f"leadlag:dashboard_query_{i}", "expr": expand_variables(e)} for i, e in enumerate(exprs)]
    rules = {"groups": [{"name": "dashboards", "rules": records}]}
    rules_file = tmp_path / "queries.yml"
    rules_file.write_text(yaml.safe_dump(rules), encoding="utf-8")
    checked = subprocess.run(
        ["promtool", "check", "rules", str(rules_file)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in checked.stdout


def test_the_divergence_alert_is_annotated_on_the_traffic_and_conversion_panels() -> None:
    dashboard = by_title("leadlag — Leading vs lagging")
    annotation = next(a for a in dashboard["annotations"]["list"] if a.get("expr"))
    assert "leadlag_divergence_firing" in annotation["expr"]
    assert annotation["expr"].endswith("== 1")
    shown_on = {p["title"] for p in iter_panels(dashboard) if p["id"] in annotation["filter"]["ids"]}
    assert {"Sessions by channel", "Visit → lead conversion"} <= shown_on


def test_the_funnel_reads_time_to_convert_from_the_histogram_buckets() -> None:
    exprs = [e.expr for e in panel_catalogue([by_title("leadlag — Funnel")]) if e.title.startswith("Time to convert")]
    # every worker exposes the company's histogram: one copy (max over instances), then summed by label
    buckets = 'max without (instance) (leadlag_time_to_stage_seconds_bucket{window="$window", channel=~"$channel"})'
    assert exprs == [
        f"histogram_quantile(0.5, sum by (le, channel, stage) ({buckets}))",
        f"histogram_quantile(0.9, sum by (le, channel, stage) ({buckets}))",
    ]


def test_every_company_figure_is_taken_once_whatever_the_number_of_workers() -> None:
    """Every worker exposes the whole company's figures: a panel takes one worker's (max over instances)
    before it sums over any other label; only the workers' own counters are summed over instances."""
    own = {
        "leadlag_deadletters_total",
        "leadlag_messages_in_total",
        "leadlag_events_in_total",
        "leadlag_batches_folded_total",
        "leadlag_rebalances_total",
        "leadlag_consumer_lag_messages",
        "leadlag_partitions_assigned",
        "leadlag_snapshot_failures_total",
        "leadlag_publish_failures_total",
        "leadlag_ready",
        "leadlag_recovery_in_progress",
        "leadlag_snapshot_computation_seconds",
        "leadlag_worker_start_time_seconds",
        "leadlag_voice",
    }
    for dashboard in sorted(DASHBOARDS_FOLDER.glob("*.json")):
        for entry in panel_catalogue([json.loads(dashboard.read_text())]):
            for match in re.finditer(r"leadlag_[a-z_0-9]+", entry.expr):
                name = match.group(0)
                if name in own or name.startswith("leadlag_faust_"):
                    continue
                before = entry.expr[: match.start()]
                once = ("max without (instance) (", *(f"max without (instance) ({f}(" for f in ("rate", "increase")))
                assert before.endswith(once), (dashboard.name, entry.title, entry.expr)


def test_grafana_variables_expand_the_way_grafana_sends_them() -> None:
    expr = 'sum(rate(leadlag_events_in_total{channel=~"$channel"}[$__rate_interval])) and on() vector(${window})'
    expanded = expand_variables(expr, {"channel": "paid", "__rate_interval": "2m", "window": "1"})
    assert expanded == 'sum(rate(leadlag_events_in_total{channel=~"paid"}[2m])) and on() vector(1)'
    with pytest.raises(KeyError, match="month"):
        expand_variables('leadlag_month_end_mrr{month="$month"}', {})


def test_metric_names_ignore_label_values_that_look_like_leadlag_topics() -> None:
    expr = 'sum(rate(leadlag_events_in_total{topic="leadlag.entities"}[1m])) / leadlag_sessions_bucket'
    assert metric_names(expr) == {"leadlag_events_in_total", "leadlag_sessions_bucket"}
    assert family_name("leadlag_time_in_stage_seconds_count", ["leadlag_time_in_stage_seconds"]) == (
        "leadlag_time_in_stage_seconds"
    )
    assert family_name("leadlag_input_events_total", ["leadlag_time_in_stage_seconds"]) == "leadlag_input_events_total"


def test_rendering_keeps_the_hand_written_intro_and_escapes_pipes_in_promql() -> None:
    dashboard = {
        "title": "D",
        "uid": "d",
        "panels": [
            {"type": "row", "title": "section", "panels": []},
            {"title": "Churn", "fieldConfig": {"defaults": {"unit": "short"}}, "targets": [{"expr": 'x{k=~"a|b"}'}]},
        ],
    }
    readme = render_catalogue([dashboard], "# Mine\n\nHello.\n")
    assert readme.startswith("# Mine\n\nHello.\n\n<!-- Generated")
    assert '| Churn | `x{k=~"a\\|b"}` | `short` |' in readme.splitlines()
    assert intro_of(readme) == "# Mine\n\nHello.\n"


def test_the_datasource_provisioning_declares_the_prometheus_the_dashboards_default_to() -> None:
    provisioned = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert provisioned["apiVersion"] == 1
    (datasource,) = provisioned["datasources"]
    assert (datasource["type"], datasource["uid"], datasource["isDefault"]) == ("prometheus", "prometheus", True)
    for dashboard in DASHBOARDS:
        assert variable(dashboard, "datasource")["current"]["value"] == datasource["uid"]


def test_the_dashboard_provider_loads_the_dashboards_folder_where_the_readme_says_to_mount_it() -> None:
    provisioned = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "leadlag.yml").read_text())
    assert provisioned["apiVersion"] == 1
    (provider,) = provisioned["providers"]
    assert provider["type"] == "file"
    mount = provider["options"]["path"]
    assert f"`dashboards/` at `{mount}`" in (ROOT / CATALOGUE_FILE).read_text(encoding="utf-8").replace("\n", " ")
    assert sorted(p.name for p in (GRAFANA / "dashboards").iterdir()) == [
        "1-leading-vs-lagging.json",
        "2-funnel.json",
        "3-revenue.json",
        "4-pipeline-health.json",
    ]
