"""Metrics after known calls, scraped from a real HTTP endpoint on loopback; no prompt in any series."""

import urllib.request

import pytest
from conftest import seeded
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

import memguard
from memguard import GuardConfig, Policy
from memguard.metrics import GuardMetrics, default_metrics, serve

SECRET = "Qwerty Confidential Product Shot Of Brand Zed"


def _scrape(registry) -> tuple[str, dict]:
    server, thread = serve(0, registry=registry)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=10) as response:
            text = response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return text, samples


def test_known_calls_are_counted_and_served(shared_base_pipe):
    registry = CollectorRegistry()
    metrics = GuardMetrics(registry)
    flag = memguard.guard(
        shared_base_pipe, GuardConfig(name="web", metrics=metrics, threshold=-1.0, policy=Policy.uniform("flag"))
    )
    block = memguard.guard(
        shared_base_pipe, GuardConfig(name="web", metrics=metrics, threshold=-1.0, policy=Policy.uniform("block"))
    )
    clean = memguard.guard(shared_base_pipe, GuardConfig(name="web", metrics=metrics, threshold=1e9, decision_step=2))
    off = memguard.guard(shared_base_pipe, GuardConfig(name="web", metrics=metrics, enabled=False))
    flag.score([SECRET] * 3, num_inference_steps=3, progress=False)  # audits count no images
    for pipe, n in ((flag, 2), (block, 1), (clean, 3), (off, 1)):
        pipe([SECRET] * n, num_inference_steps=3, generator=seeded(n), output_type="np")
    with pytest.raises(ValueError):
        memguard.guard(shared_base_pipe, GuardConfig(name="web", metrics=metrics, decision_step=9))(
            SECRET, num_inference_steps=2
        )

    text, samples = _scrape(registry)

    def value(name, **labels):
        return samples[(name, tuple(sorted({"pipeline": "web", **labels}.items())))]

    assert value("memguard_images_total", outcome="flagged") == 2
    assert value("memguard_images_total", outcome="blocked") == 1
    assert value("memguard_images_total", outcome="clean") == 3
    assert value("memguard_images_total", outcome="disabled") == 1
    assert value("memguard_detection_score_count") == 6
    assert value("memguard_decision_step_count") == 6
    assert value("memguard_decision_step_bucket", le="1.0") == 3  # the clean call decided at step 2
    assert value("memguard_guard_overhead_seconds_count") == 3  # three guarded calls; disabled is not timed
    assert value("memguard_guard_errors_total", kind="ValueError") == 1
    assert value("memguard_threshold", source="config", model_fingerprint="") == 1e9  # the last threshold set
    for word in ("Qwerty", "Confidential", "Brand"):
        assert word.lower() not in text.lower()


def test_default_metrics_are_created_once_on_the_default_registry():
    assert default_metrics() is default_metrics()
    assert GuardConfig().effective_metrics is default_metrics()


def test_metrics_config_is_validated():
    with pytest.raises(ValueError, match="GuardConfig.name"):
        GuardConfig(name="a prompt with spaces")
    with pytest.raises(TypeError, match="GuardConfig.metrics"):
        GuardConfig(metrics=CollectorRegistry())
