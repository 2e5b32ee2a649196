"""Metrics after known calls, scraped from a real HTTP endpoint on loopback; no prompt in any series."""

import urllib.request

import pytest
import torch
from helpers import seeded
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

import memguard
from memguard import GuardConfig, Policy
from memguard.metrics import ERROR_SOURCES, OUTCOMES, GuardMetrics, default_metrics, serve

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
    # the refused call (decision_step beyond the steps) is the one error, whichever source counts it
    by_kind = {dict(labels)["kind"]: v for (name, labels), v in samples.items() if name.endswith("by_kind_total")}
    assert by_kind == {"MemguardValueError": 1}  # memguard's own error type (a ValueError) about the call
    assert sum(value("memguard_guard_errors_total", source=s) for s in ("guard", "pipeline")) == 1
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


def _sample(registry, name, **labels):
    return registry.get_sample_value(name, labels)


def test_registering_a_pipeline_creates_its_error_and_outcome_series_at_zero():
    registry = CollectorRegistry()
    metrics = GuardMetrics(registry)
    assert _sample(registry, "memguard_guard_errors_total", pipeline="web", source="guard") is None
    metrics.register_pipeline("web")
    metrics.register_pipeline("web")  # idempotent: nothing is reset or doubled
    for source in ERROR_SOURCES:
        assert _sample(registry, "memguard_guard_errors_total", pipeline="web", source=source) == 0.0
    for name in OUTCOMES:
        assert _sample(registry, "memguard_images_total", pipeline="web", outcome=name) == 0.0
    # served over HTTP as well: a scrape before any traffic already has the series an alert needs
    _, samples = _scrape(registry)
    assert samples[("memguard_guard_errors_total", (("pipeline", "web"), ("source", "guard")))] == 0.0


def test_the_first_observation_registers_the_pipeline():
    registry = CollectorRegistry()
    metrics = GuardMetrics(registry)
    metrics.observe_threshold("api", 0.5, "config")
    assert _sample(registry, "memguard_guard_errors_total", pipeline="api", source="pipeline") == 0.0
    assert _sample(registry, "memguard_images_total", pipeline="api", outcome="blocked") == 0.0


class _CallersOwnError(Exception):
    pass


def test_guard_and_pipeline_errors_are_counted_apart_with_a_bounded_kind():
    registry = CollectorRegistry()
    metrics = GuardMetrics(registry)
    metrics.observe_guard_error("web", RuntimeError(f"hook failed on {SECRET}"))
    metrics.observe_pipeline_error("web", ValueError(SECRET))
    metrics.observe_pipeline_error("web", torch.OutOfMemoryError("CUDA out of memory"))
    metrics.observe_pipeline_error("web", _CallersOwnError(SECRET))
    metrics.observe_error("web", KeyError("x"))  # the older entry point: the guard's own, as before

    def errors(source):
        return _sample(registry, "memguard_guard_errors_total", pipeline="web", source=source)

    def kind(source, name):
        return _sample(registry, "memguard_guard_errors_by_kind_total", pipeline="web", source=source, kind=name)

    assert (errors("guard"), errors("pipeline")) == (2.0, 3.0)
    assert kind("guard", "RuntimeError") == kind("guard", "KeyError") == 1.0
    assert kind("pipeline", "ValueError") == kind("pipeline", "OutOfMemoryError") == 1.0
    assert kind("pipeline", "other") == 1.0  # a class of the caller's own code is not a label value
    assert kind("pipeline", "_CallersOwnError") is None
    text, _ = _scrape(registry)
    for word in ("Qwerty", "Confidential", "Brand", "out of memory"):
        assert word.lower() not in text.lower()


@pytest.mark.parametrize("name", ["a prompt with spaces", "", "x" * 65, 7])
def test_register_pipeline_refuses_a_name_that_is_not_a_label(name):
    with pytest.raises(ValueError, match="pipeline name must be"):
        GuardMetrics(CollectorRegistry()).register_pipeline(name)


def test_a_failing_callback_is_counted_as_the_pipeline_s_error(shared_base_pipe):
    registry = CollectorRegistry()
    pipe = memguard.guard(shared_base_pipe, GuardConfig(name="web", metrics=GuardMetrics(registry), threshold=1e9))

    def callback(pipe, step, timestep, kwargs):
        raise _CallersOwnError(SECRET)

    with pytest.raises(_CallersOwnError):
        pipe(SECRET, num_inference_steps=2, callback_on_step_end=callback, output_type="np")
    assert _sample(registry, "memguard_guard_errors_total", pipeline="web", source="pipeline") == 1.0
    assert _sample(registry, "memguard_guard_errors_total", pipeline="web", source="guard") == 0.0


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(num_inference_steps=0),
        dict(num_inference_steps=2, negative_prompt=["blurry", "dark"]),  # two negative prompts for one prompt
        dict(num_inference_steps=2, foo=1),
    ],
    ids=["checked by memguard", "checked by diffusers", "unknown argument"],
)
def test_the_callers_invalid_arguments_count_as_the_pipelines_errors_not_the_guards(shared_base_pipe, kwargs):
    registry = CollectorRegistry()
    pipe = memguard.guard(shared_base_pipe, GuardConfig(name="web", metrics=GuardMetrics(registry), threshold=1e9))
    pipe(SECRET, num_inference_steps=2, output_type="latent")
    assert pipe.last_memorization is not None
    with pytest.raises((ValueError, TypeError)):
        pipe(SECRET, output_type="latent", **kwargs)
    assert _sample(registry, "memguard_guard_errors_total", pipeline="web", source="pipeline") == 1.0
    assert _sample(registry, "memguard_guard_errors_total", pipeline="web", source="guard") == 0.0
    assert pipe.last_memorization is None  # not the reports of the call before


def test_configuring_a_guarded_pipeline_registers_its_series(shared_base_pipe):
    registry = CollectorRegistry()
    memguard.guard(shared_base_pipe, GuardConfig(name="fresh", metrics=GuardMetrics(registry)))
    assert _sample(registry, "memguard_guard_errors_total", pipeline="fresh", source="guard") == 0.0


def test_a_second_guardmetrics_on_one_registry_is_refused_by_name():
    registry = CollectorRegistry()
    GuardMetrics(registry)
    with pytest.raises(ValueError, match="holds memguard's metrics already.*pass that GuardMetrics"):
        GuardMetrics(registry)


def test_calibrating_a_guarded_pipeline_leaves_its_metrics_alone(shared_base_pipe):
    registry = CollectorRegistry()
    guarded = memguard.guard(shared_base_pipe, GuardConfig(name="prod", metrics=GuardMetrics(registry), threshold=0.5))
    guarded(["a red circle"], num_inference_steps=2, generator=seeded(1), output_type="np")
    before = {k: v for k, v in _scrape(registry)[1].items() if "created" not in k[0]}
    benign = [f"benign prompt number {i}" for i in range(10)]
    memguard.calibrate(guarded, benign, target_fpr=0.3, num_inference_steps=2, progress=False)
    after = {k: v for k, v in _scrape(registry)[1].items() if "created" not in k[0]}
    assert after == before  # the threshold in force is still 0.5: calibration's working threshold never shows
    labels = (("model_fingerprint", ""), ("pipeline", "prod"), ("source", "config"))
    assert before[("memguard_threshold", labels)] == 0.5


def test_the_threshold_gauge_holds_only_the_threshold_in_force():
    registry = CollectorRegistry()
    metrics = GuardMetrics(registry)
    metrics.observe_threshold("web", 0.2, "default")
    metrics.observe_threshold("web", 1.48, "calibration", "abc123")  # calibrated since
    metrics.observe_threshold("batch", 0.5, "config")  # another pipeline keeps its own
    series = {
        (s.labels["pipeline"], s.labels["source"]): s.value
        for family in registry.collect()
        if family.name == "memguard_threshold"
        for s in family.samples
    }
    assert series == {("web", "calibration"): 1.48, ("batch", "config"): 0.5}
