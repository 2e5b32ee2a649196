"""Every example runs (on the shipped testbed)."""

import asyncio
import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import loaded_script

EXAMPLES = Path(__file__).parent.parent / "examples"


def test_wrap_existing_pipeline_prints_a_report():
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "wrap_existing_pipeline.py")], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["status"] == "checked" and report["action"] in ("none", "flagged")


def _load_service_module():
    with loaded_script(EXAMPLES / "fastapi_service" / "app.py", "fastapi_service_app") as module:
        return module


@contextlib.contextmanager
def _serving(app):
    """Run `app` with uvicorn on a free loopback port in a thread; yield its base URL."""
    uvicorn = pytest.importorskip("uvicorn")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_fastapi_service_holds_50_concurrent_requests_without_mixing_reports():
    pytest.importorskip("fastapi", reason="install memguard[serve]")
    httpx = pytest.importorskip("httpx")
    from prometheus_client.parser import text_string_to_metric_families

    from memguard import Policy, testbed

    service = _load_service_module()
    pipe, truth = testbed.load()
    # flag, not re-sample: each image stays the first generation of its own prompt and seed
    pipe.guard_config = pipe.guard_config.replace(policy=Policy.uniform("flag"))
    prompts = [truth.memorized_prompts["m01"], truth.mixed_prompts["x01"], truth.intended[0].prompt, *truth.novel[:2]]
    distinct = [(prompt, seed) for prompt in prompts for seed in (0, 1)]  # 10 requests, 5 times each below
    app = service.create_app(pipe)

    async def fire(base, pairs):
        async with httpx.AsyncClient(base_url=base, timeout=120) as client:
            return await asyncio.gather(
                *(client.post("/generate", json={"prompt": p, "seed": s, "steps": 4}) for p, s in pairs)
            )

    def key(response):  # the report without its timing, which differs between calls
        return response["image_png_base64"], {k: v for k, v in response["report"].items() if k != "guard_seconds"}

    with _serving(app) as base:
        reference = {}
        for pair in distinct:  # one at a time: what each request must get back
            (response,) = asyncio.run(fire(base, [pair]))
            assert response.status_code == 200, response.text
            reference[pair] = key(response.json())
        load = distinct * 5
        random.Random(0).shuffle(load)
        started = time.perf_counter()
        responses = asyncio.run(fire(base, load))
        seconds = time.perf_counter() - started
        metrics_text = httpx.get(f"{base}/metrics").text

    assert [r.status_code for r in responses] == [200] * 50
    for pair, response in zip(load, responses, strict=True):
        assert key(response.json()) == reference[pair], f"request {distinct.index(pair)} got another's result"
    # each prompt and seed has its own image and first-attempt score: the references share nothing
    assert len({reference[pair][0] for pair in distinct}) == len(distinct)
    assert len({reference[pair][1]["score"] for pair in distinct}) == len(distinct)
    assert app.state.max_in_flight > 1, "the requests never overlapped: concurrency was not exercised"
    series = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(metrics_text)
        for sample in family.samples
    }
    images = sum(v for (name, labels), v in series.items() if name == "memguard_images_total")
    assert images == 60  # 10 sequential + 50 concurrent
    assert series[("imagegen_requests_in_flight", ())] == 0
    assert series[("imagegen_generate_seconds_count", ())] == 60
    assert not any(prompt in metrics_text for prompt in prompts)
    print(f"50 concurrent requests in {seconds:.1f} s")


def test_fastapi_service_refuses_bad_input_without_echoing_it_and_exports_zero_error_series(shared_base_pipe):
    pytest.importorskip("fastapi", reason="install memguard[serve]")
    from fastapi.testclient import TestClient

    import memguard

    service = _load_service_module()
    app = service.create_app(memguard.guard(shared_base_pipe))
    secret = "Zorblax private product shot " * 100  # over the 2000-character limit
    with TestClient(app) as client:
        metrics_text = client.get("/metrics").text  # before any request
        refused = client.post("/generate", json={"prompt": secret, "seed": 1})
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["loc"] == ["body", "prompt"] and "Zorblax" not in refused.text
    for source in ("guard", "pipeline"):
        assert f'memguard_guard_errors_total{{pipeline="service",source="{source}"}} 0.0' in metrics_text


def test_fastapi_service_refuses_unknown_fields_and_loosely_typed_numbers(shared_base_pipe):
    pytest.importorskip("fastapi", reason="install memguard[serve]")
    from fastapi.testclient import TestClient

    import memguard

    service = _load_service_module()
    app = service.create_app(memguard.guard(shared_base_pipe))
    secret = "Zorblax private product shot"
    refused = {
        "negative_prompt": {"prompt": secret, "negative_prompt": "blurry"},  # not a field: never silently dropped
        "guidance_scale": {"prompt": secret, "guidance_scale": 3.0},  # the parent's name, not this service's
        "seed": {"prompt": secret, "seed": True},  # not seed 1
        "steps": {"prompt": secret, "steps": "30"},
    }
    with TestClient(app) as client:
        for field, body in refused.items():
            answer = client.post("/generate", json=body)
            assert answer.status_code == 422, field
            assert answer.json()["detail"][0]["loc"] == ["body", field] and "Zorblax" not in answer.text


def test_fastapi_service_counts_into_the_pipelines_own_metrics_and_keeps_its_name(shared_base_pipe):
    pytest.importorskip("fastapi", reason="install memguard[serve]")
    from fastapi.testclient import TestClient
    from prometheus_client import CollectorRegistry

    import memguard
    from memguard.metrics import GuardMetrics

    service = _load_service_module()
    with pytest.raises(TypeError, match="pipe must be a guarded pipeline"):
        service.create_app(shared_base_pipe)
    own = CollectorRegistry()
    config = memguard.GuardConfig(name="team-a", metrics=GuardMetrics(own))
    with pytest.raises(ValueError, match="registry differs"):
        service.create_app(memguard.guard(shared_base_pipe, config), registry=CollectorRegistry())
    app = service.create_app(memguard.guard(shared_base_pipe, config))
    with TestClient(app) as client:
        answer = client.post("/generate", json={"prompt": "a small red square", "seed": 3, "steps": 2, "guidance": 2})
        exposed = client.get("/metrics").text
    assert answer.status_code == 200, answer.text
    from memguard.report import OUTCOMES

    counted = sum(own.get_sample_value("memguard_images_total", {"pipeline": "team-a", "outcome": o}) for o in OUTCOMES)
    assert counted == 1.0 and 'pipeline="team-a"' in exposed and 'pipeline="service"' not in exposed


def test_audit_prompt_log_script_summarizes_a_scan(tmp_path):
    out = tmp_path / "audit"
    env = dict(os.environ, MEMGUARD=f"{sys.executable} -m memguard.cli", PYTHON=sys.executable)
    result = subprocess.run(
        ["bash", str(EXAMPLES / "audit_prompt_log.sh"), str(EXAMPLES / "prompt_log.jsonl"), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    rows = [json.loads(line) for line in (out / "scan.jsonl").read_text().splitlines()]
    assert summary["prompts"] == len(rows) == 8  # the log's blank line is skipped
    assert [r["line"] for r in rows] == [1, 2, 3, 4, 6, 7, 8, 9]
    assert summary["memorized"] == sum(r["memorized"] for r in rows)
    # the memorized captions m01 (line 2) and m05 (line 6) and the mixed item (line 8) are up for review;
    # the novel compositions (lines 1, 4, 7, 9) are not
    assert {2, 6, 8} <= set(summary["review_lines"]) and not {1, 4, 7, 9} & set(summary["review_lines"])
    log_text = (EXAMPLES / "prompt_log.jsonl").read_text()
    captions = [json.loads(line)["caption"] for line in log_text.splitlines() if line.strip()]
    written = (out / "scan.jsonl").read_text() + (out / "summary.json").read_text() + result.stdout
    assert not any(caption in written for caption in captions)


def test_fastapi_service_takes_a_calibration_and_refuses_to_act_without_one(tmp_path):
    pytest.importorskip("fastapi", reason="install memguard[serve]")
    service = _load_service_module()
    with pytest.raises(ValueError, match="--policy resample needs --calibration FILE"):
        service.guard_config("tiny", None, "resample")
    with pytest.raises(ValueError, match="--policy block needs --calibration FILE"):
        service.guard_config("tiny", None, "block")
    assert service.guard_config("tiny", None, "flag").calibration is None  # observing needs none
    shipped = service.guard_config("testbed", None, "block")  # the testbed ships its calibration
    assert shipped.calibration is not None and shipped.policy.unintended == "block"
    with pytest.raises(ValueError, match="calibration"):
        service.guard_config("tiny", tmp_path / "missing.json", "resample")
