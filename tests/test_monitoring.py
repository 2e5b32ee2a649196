"""The monitoring files that ship with the examples: every PromQL expression in the Grafana dashboard
and the alert rules parses and names only series memguard exports, and the YAML/JSON files (Prometheus
configs, Grafana provisioning, docker compose) are well-formed and point at one another consistently.
Docker cannot run here: these checks are what keeps the compose setup correct by construction."""

import json
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from memguard.metrics import GuardMetrics

promql = pytest.importorskip("promql_parser")

EXAMPLES = Path(__file__).parent.parent / "examples"
SERVICE = EXAMPLES / "fastapi_service"
DASHBOARD = SERVICE / "grafana" / "memguard-dashboard.json"
ALERT_RULES = SERVICE / "alert_rules.yml"
COMPOSE = SERVICE / "docker-compose.yml"
# Grafana's variables, replaced by values of the same kind so the expression parses as PromQL
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__range": "6h", "$__interval": "1m", "$pipeline": ".*"}
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"), "gauge": ("",)}


def exported_series() -> set[str]:
    """Series names memguard's metric families expose, from a fresh registry (no samples needed)."""
    registry = CollectorRegistry()
    GuardMetrics(registry)
    return {family.name + suffix for family in registry.collect() for suffix in SUFFIXES[family.type]}


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (it must parse as PromQL)."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"an unknown Grafana variable in {expr!r}"
    names = set()

    def visit(node):
        if isinstance(node, promql.VectorSelector):
            assert node.name, f"a selector without a metric name in {expr!r}"
            names.add(node.name)

    promql.walk(promql.parse(expr), pre_visit=visit)
    return names


def dashboard_queries(dashboard: dict) -> list[str]:
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":  # label_values(metric, label) is Grafana's, not PromQL
            (metric,) = re.fullmatch(r"label_values\((\w+),\s*\w+\)", variable["definition"]).groups()
            queries.append(metric)
    return queries


def test_exported_series_are_the_library_s():
    series = exported_series()
    assert {"memguard_images_total", "memguard_guard_errors_total", "memguard_detection_score_bucket"} <= series
    assert "memguard_threshold" in series and "memguard_images" not in series  # a counter is read as _total


def test_metric_name_extraction_sees_every_selector():
    expr = 'histogram_quantile(0.9, sum by (le) (rate(a_bucket{x=~"$pipeline"}[$__rate_interval]))) / on() b + c'
    assert metric_names(expr) == {"a_bucket", "b", "c"}
    with pytest.raises(ValueError):
        metric_names("sum(rate(a[5m])")  # unbalanced: not PromQL


def test_dashboard_queries_name_only_exported_series():
    dashboard = json.loads(DASHBOARD.read_text())
    exported = exported_series()
    queries = dashboard_queries(dashboard)
    used = set().union(*(metric_names(q) for q in queries))
    assert used <= exported, f"not exported by memguard: {sorted(used - exported)}"
    # the panels the dashboard promises, each with at least one query
    titles = {panel["title"]: panel for panel in dashboard["panels"]}
    for title in (
        "Images by outcome",
        "Memorized and re-sampled rates",
        "Decision score distribution",
        "Decision score quantiles and threshold",
        "Guard overhead per call (p50, p95)",
        "Errors by source",
        "Threshold in force",
    ):
        assert titles[title]["targets"], title
    assert "model_fingerprint" in titles["Threshold in force"]["targets"][0]["expr"]


def test_dashboard_is_well_formed_for_grafana():
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    cells = set()
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        columns, rows = range(grid["x"], grid["x"] + grid["w"]), range(grid["y"], grid["y"] + grid["h"])
        area = {(x, y) for x in columns for y in rows}
        assert not cells & area, f"{panel['title']} overlaps another panel"
        cells |= area
        # every query goes to the datasource the dashboard's variable picks
        assert panel["datasource"]["uid"] == "${datasource}"
        assert all(target["datasource"]["uid"] == "${datasource}" for target in panel["targets"])
        assert len({target["refId"] for target in panel["targets"]}) == len(panel["targets"])
    variables = {variable["name"] for variable in dashboard["templating"]["list"]}
    assert variables == {"datasource", "pipeline"}


def test_alert_rules_name_only_exported_series():
    rules = [rule for group in yaml.safe_load(ALERT_RULES.read_text())["groups"] for rule in group["rules"]]
    exported = exported_series()
    assert {rule["alert"] for rule in rules} >= {"MemguardGuardErrors", "MemguardBlockedImageRateHigh"}
    for rule in rules:
        used = metric_names(rule["expr"])
        assert used and used <= exported, f"{rule['alert']}: {sorted(used - exported)}"
        assert re.fullmatch(r"(\d+(ms|s|m|h|d|w|y))+", rule["for"]), rule["for"]  # a Prometheus duration
        assert rule["labels"]["severity"] in ("critical", "warning", "info")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    by_name = {rule["alert"]: rule for rule in rules}
    # the guard's own failures page; errors of the pipeline or the caller's code do not
    assert 'source="guard"' in by_name["MemguardGuardErrors"]["expr"]


PROMETHEUS_CONFIGS = [
    SERVICE / "prometheus.yml",
    SERVICE / "prometheus.compose.yml",
    EXAMPLES / "ray_serve" / "prometheus.yml",
]


@pytest.mark.parametrize("config", PROMETHEUS_CONFIGS, ids=lambda path: str(path.relative_to(EXAMPLES)))
def test_prometheus_configs_load_the_shipped_alert_rules(config):
    data = yaml.safe_load(config.read_text())
    rule_files = [(config.parent / name).resolve() for name in data["rule_files"]]
    if config.name == "prometheus.compose.yml":  # in the container the rules are mounted beside the config
        assert data["rule_files"] == ["alert_rules.yml"]
    else:
        assert rule_files == [ALERT_RULES.resolve()]
    assert all(job["metrics_path"] == "/metrics" for job in data["scrape_configs"])


def test_compose_services_point_at_one_another():
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert set(services) == {"imagegen", "prometheus", "grafana"}
    build = services["imagegen"]["build"]
    context = (COMPOSE.parent / build["context"]).resolve()
    dockerfile = context / build["dockerfile"]
    assert (context / "pyproject.toml").is_file() and dockerfile.is_file()

    mounts = {}
    for name in ("prometheus", "grafana"):
        for volume in services[name]["volumes"]:
            source, target = volume.split(":")[:2]
            if source.startswith("./"):  # a bind mount of a file or folder shipped here
                assert (COMPOSE.parent / source).exists(), source
                mounts[target] = (COMPOSE.parent / source).resolve()
            else:
                assert source in compose["volumes"], source

    # Prometheus: its config scrapes the service by compose name, on the port the service listens on
    prometheus_config = yaml.safe_load(mounts["/etc/prometheus/prometheus.yml"].read_text())
    assert mounts["/etc/prometheus/alert_rules.yml"] == ALERT_RULES.resolve()
    (target,) = prometheus_config["scrape_configs"][0]["static_configs"][0]["targets"]
    host, port = target.split(":")
    command = re.search(r"^CMD (.+)$", dockerfile.read_text(), re.MULTILINE).group(1)
    argv = json.loads(command)
    assert host in services and argv[argv.index("--port") + 1] == port and argv[argv.index("--host") + 1] == "0.0.0.0"

    # Grafana: the provisioned datasource is that Prometheus; the dashboard provider reads the folder
    # the dashboard is mounted into; the home dashboard is that file
    provisioning = mounts["/etc/grafana/provisioning"]
    (datasource,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert datasource["url"] == "http://prometheus:9090" and datasource["type"] == "prometheus"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "memguard.yml").read_text())["providers"]
    dashboard_target = next(target for target, source in mounts.items() if source == DASHBOARD.resolve())
    assert str(Path(dashboard_target).parent) == provider["options"]["path"]
    assert services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] == dashboard_target
    # every port is published on the host's loopback only
    for service in services.values():
        assert all(port.startswith("127.0.0.1:") for port in service.get("ports", []))


def test_dockerfile_copies_only_what_its_ignore_file_lets_through():
    dockerfile = (SERVICE / "Dockerfile").read_text()
    ignore = (SERVICE / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    repository = COMPOSE.parent.parent.parent
    for source in re.findall(r"^COPY (.+) \S+$", dockerfile, re.MULTILINE):
        for path in source.split():
            assert (repository / path).exists(), path
            assert path.rstrip("/") in allowed, f"{path} is copied but excluded from the build context"
