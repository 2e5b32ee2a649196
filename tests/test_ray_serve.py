"""The Ray Serve example (examples/ray_serve): its parts without Ray, then a local Ray instance with two
CPU replicas of the testbed and 50 concurrent requests batched into guarded calls: each response is its
own request's image and report, and one scrape of the node's metrics port adds up both replicas. The
Ray test is marked `ray` (deselect it with `-m "not ray"`)."""

import asyncio
import base64
import contextlib
import importlib
import io
import json
import math
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from PIL import Image
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

ray = pytest.importorskip("ray", reason="install memguard[serve-ray]")
serve = pytest.importorskip("ray.serve")

EXAMPLE = Path(__file__).parent.parent / "examples" / "ray_serve"
STEPS = 4


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def _example_modules():
    """The example's modules, imported by name as the replicas import them (from Ray's working_dir)."""
    sys.path.insert(0, str(EXAMPLE))
    try:
        yield importlib.import_module("guarded_deployment"), importlib.import_module("load_test")
    finally:
        sys.path.remove(str(EXAMPLE))
        for name in ("guarded_deployment", "load_test"):
            sys.modules.pop(name, None)


@contextlib.contextmanager
def _local_ray(monkeypatch):
    """A Ray instance of this test alone: 2 CPUs, no dashboard, no usage reporting; shut down on exit."""
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")  # inherited by every Ray process started below
    # Serve kills an HTTP proxy that is not ready within 5 s (health checks: 10 s); on a 2-core machine
    # busy with other work that happens before any request, so the test gives it a minute
    monkeypatch.setenv("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "60")
    monkeypatch.setenv("RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S", "60")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    temp_dir = tempfile.mkdtemp(prefix="mg-ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        _temp_dir=temp_dir,
        runtime_env={"working_dir": str(EXAMPLE)},
        log_to_driver=False,
        configure_logging=False,
    )
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            serve.shutdown()
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)  # Ray's session files and logs


def _scrape(port: int) -> tuple[str, dict]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return text, samples


def _total(samples: dict, name: str, **labels) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and labels.items() <= dict(ls).items())


def _pixels(body: dict) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(body["image_png_base64"]))), dtype=np.int16)


def _same_report(a, b, path="report") -> None:
    """Equal reports: floats to 1e-5 (a batched call's arithmetic differs in the last bits), the rest
    exactly; the guard's time differs between calls and is left out."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            if key != "guard_seconds":
                _same_report(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same_report(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=0, abs_tol=1e-5), f"{path}: {a} vs {b}"
    else:
        assert a == b, f"{path}: {a!r} vs {b!r}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def example():
    with _example_modules() as (deployment, _):
        yield deployment


def test_serve_config_is_valid_and_builds_the_app(example):
    from ray.serve.schema import ServeDeploySchema

    config = ServeDeploySchema.model_validate(yaml.safe_load((EXAMPLE / "serve_config.yaml").read_text()))
    (app,) = config.applications
    assert app.import_path == "guarded_deployment:build_app"
    assert [d.name for d in app.deployments] == [example.GuardedGenerator.name]
    (deployment_config,) = app.deployments
    assert deployment_config.max_ongoing_requests == 2 * app.args["max_batch_size"]
    assert deployment_config.autoscaling_config["min_replicas"] >= 1
    built = example.build_app(app.args)  # reads the testbed's calibration and registry where it is built
    assert isinstance(built, serve.Application)


def test_bad_app_arguments_name_the_argument(example, tmp_path):
    with pytest.raises(ValueError, match="'steps'"):
        example.parse_args({"steps": "0"})
    with pytest.raises(ValueError, match="'max_batch_sise'"):
        example.parse_args({"max_batch_sise": 8})
    with pytest.raises(ValueError, match="'pipeline_name'"):
        example.parse_args({"pipeline_name": "a prompt with spaces"})
    assert example.parse_args({"steps": "4", "num_gpus": "0.5"}).steps == 4  # `serve run k=v` passes strings
    missing = tmp_path / "calibration.json"
    with pytest.raises(ValueError, match=f"'calibration'.*{missing}"):
        example.build_app({"calibration": str(missing)})
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        example.build_app({"calibration": str(broken)})


def test_a_request_with_an_unknown_field_or_a_loosely_typed_seed_is_refused(example):
    from pydantic import ValidationError

    for body in ({"prompt": "a red square", "negative_prompt": "blurry"}, {"prompt": "a red square", "seed": True}):
        with pytest.raises(ValidationError):
            example.GenerateRequest.model_validate_json(json.dumps(body))
    assert example.GenerateRequest.model_validate_json('{"prompt": "a red square", "seed": 7}').seed == 7


def test_replica_health_fails_after_consecutive_failed_calls(example):
    health = example.ReplicaHealth(max_failed_calls=3)
    for succeeded in (False, False, True, False, False):
        health.record(succeeded)
        health.check()  # never three in a row
    health.record(False)
    with pytest.raises(RuntimeError, match="last 3 guarded calls failed"):
        health.check()


def test_one_replica_per_node_serves_the_metrics_port_and_another_takes_over(example):
    port = _free_port()
    first, second = example.NodeMetricsEndpoint("127.0.0.1", port), example.NodeMetricsEndpoint("127.0.0.1", port)
    try:
        assert first.hold() and not second.hold()
        _scrape(port)
        first.close()  # the serving replica went away
        assert second.hold()  # the next health check of another replica takes the port
        _scrape(port)
    finally:
        first.close()
        second.close()


def test_sweep_drops_live_gauges_of_dead_replicas_and_keeps_their_counters(example, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    files = [f"gauge_livemostrecent_{dead.pid}.db", f"counter_{dead.pid}.db", f"gauge_livemostrecent_{os.getpid()}.db"]
    for name in files:
        (tmp_path / name).write_bytes(b"")
    example.sweep_dead_processes(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(files[1:])


@pytest.mark.ray
def test_ray_serve_batches_50_concurrent_requests_and_adds_up_both_replicas(monkeypatch, tmp_path):
    from memguard import testbed
    from memguard.calibration import Calibration

    truth = testbed.load_truth(testbed.MODEL_DIR / "truth")
    prompts = [
        truth.memorized_prompts["m01"],
        truth.memorized_prompts["m05"],
        truth.mixed_prompts["x01"],
        truth.intended[0].prompt,
        *truth.novel[:6],
    ]
    distinct = [(prompt, seed) for seed, prompt in enumerate(prompts)]  # 10 pairs, 5 requests each
    load = distinct * 5
    random.Random(0).shuffle(load)
    metrics_dir, http_port, metrics_port = tmp_path / "metrics", _free_port(), _free_port()
    started = time.perf_counter()

    with _example_modules() as (deployment, load_test), _local_ray(monkeypatch):
        serve.start(http_options={"host": "127.0.0.1", "port": http_port})
        app = deployment.build_app(
            {
                "model": "testbed",
                "steps": STEPS,
                "policy": "flag",  # each image stays the first generation of its prompt and seed
                "num_replicas": 2,
                "num_cpus": 1,
                "max_batch_size": 16,
                "batch_wait_timeout_s": 0.2,
                "metrics_dir": str(metrics_dir),
                "metrics_port": metrics_port,
            }
        )
        serve.run(app, name="memguard", route_prefix="/")
        ready = time.perf_counter()
        base = f"http://127.0.0.1:{http_port}"
        _, before = _scrape(metrics_port)
        # zero from the start, on both sources, before any request: an increase() alert sees the first error
        assert _total(before, "memguard_guard_errors_total", source="guard") == 0
        assert ("memguard_guard_errors_total", (("pipeline", "imagegen"), ("source", "pipeline"))) in before

        secret = "Zorblax private product shot " * 100  # over the 2000-character limit
        refused = httpx.post(f"{base}/generate", json={"prompt": secret, "seed": 1}, timeout=30)
        assert refused.status_code == 422 and "Zorblax" not in refused.text  # the field is named, not echoed
        assert refused.json()["detail"][0]["loc"] == ["body", "prompt"]
        payloads = [{"prompt": p, "seed": s, "request_id": f"load-{i}"} for i, (p, s) in enumerate(load)]
        load_started = time.perf_counter()
        sent = asyncio.run(load_test.send_all(base, payloads))
        figures = load_test.summary(sent, time.perf_counter() - load_started)
        alone = {}
        for k, (prompt, seed) in enumerate(distinct):  # one at a time: what each request must get back
            request = {"prompt": prompt, "seed": seed, "request_id": f"alone-{k}"}
            (reference,) = asyncio.run(load_test.send_all(base, [request]))
            assert reference.status == 200 and reference.body["batch_size"] == 1
            alone[(prompt, seed)] = reference.body
        text, after = _scrape(metrics_port)
        status = serve.status().applications["memguard"].deployments["GuardedGenerator"]
        assert status.status == "HEALTHY" and status.replica_states.get("RUNNING") == 2
        replica_files = sorted(metrics_dir.glob("counter_*.db"))
    shut_down = time.perf_counter()

    # every response is its own request's: the echoed id, then the image and report made alone
    assert [s.status for s in sent] == [200] * 50
    for s, pair in zip(sent, load, strict=True):
        assert s.body["request_id"] == s.payload["request_id"]
        assert np.abs(_pixels(s.body) - _pixels(alone[pair])).max() <= 1, f"request {s.index} got another image"
        _same_report(s.body["report"], alone[pair]["report"])
    # the references differ from one another, so a swapped image or report could not pass the above
    references = [alone[pair] for pair in distinct]
    for i, a in enumerate(references):
        for b in references[i + 1 :]:
            assert np.abs(_pixels(a) - _pixels(b)).max() > 50 and a["report"]["score"] != b["report"]["score"]
    # the memorized and mixed prompts were caught inside batches, the novel ones were not
    actions = {pair: alone[pair]["report"]["action"] for pair in distinct}
    assert [actions[pair] for pair in distinct[:3]] == ["flagged"] * 3
    assert all(actions[pair] == "none" for pair in distinct[4:])
    assert figures["batch_size_max"] > 1, "no two requests shared a guarded call"

    # one scrape adds up both replicas: every image counted once, and each replica served some
    served = 50 + len(distinct)
    assert _total(after, "memguard_images_total") == served
    flagged = sum(body["report"]["action"] == "flagged" for body in [s.body for s in sent] + references)
    assert _total(after, "memguard_images_total", outcome="flagged") == flagged == 3 * 6  # 3 pairs, 5 + 1 alone
    assert _total(after, "memguard_detection_score_count") == served
    assert _total(after, "imagegen_batch_size_sum") == served
    assert _total(after, "memguard_guard_errors_total") == 0
    calibration = Calibration.load(testbed.MODEL_DIR / "calibration.json")  # what every replica was given
    threshold_labels = [dict(ls) for (n, ls) in after if n == "memguard_threshold"]
    assert threshold_labels == [
        {"pipeline": "imagegen", "source": "calibration", "model_fingerprint": calibration.model_fingerprint}
    ]
    assert _total(after, "memguard_threshold") == pytest.approx(calibration.threshold)
    per_replica = []
    for path in replica_files:
        replica = {m.name: m for m in MultiProcessCollector.merge([str(path)], accumulate=True)}
        per_replica.append(sum(s.value for s in replica["memguard_images"].samples if s.name.endswith("_total")))
    assert len(per_replica) == 2 and min(per_replica) > 0 and sum(per_replica) == served
    assert not any(prompt in text for prompt in prompts)

    # the Ray instance is gone: no driver connection, no replica process, no HTTP proxy
    assert not ray.is_initialized()
    pids = [int(re.search(r"_(\d+)\.db$", path.name).group(1)) for path in replica_files]
    deadline = time.monotonic() + 30
    while any(map(_pid_alive, pids)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(map(_pid_alive, pids)), "a replica outlived ray.shutdown()"
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{base}/generate", timeout=2)
    print(
        f"\nray serve: ready in {ready - started:.1f} s; {figures}; "
        f"shut down {time.perf_counter() - shut_down:.1f} s after; total {time.perf_counter() - started:.1f} s"
    )
