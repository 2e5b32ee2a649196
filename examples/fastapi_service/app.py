"""A FastAPI image-generation service with the memguard guard, exposing /generate and /metrics.

    pip install 'memguard[serve]'
    python examples/fastapi_service/app.py --model testbed --port 8000   # --calibration FILE for your model
    curl -s localhost:8000/generate -H 'content-type: application/json' \
         -d '{"prompt": "a large orange circle, top right", "seed": 1, "steps": 30}'
    curl -s localhost:8000/metrics

Concurrency: one pipeline serves every request, but a diffusers pipeline must not run two calls at
once (the scheduler keeps per-call state, and the guard's hooks on the UNet record one call at a
time). Requests therefore queue for a single worker thread: the event loop stays free to accept
requests and serve /metrics, calls never overlap, and each request returns the report of its own
call together with its own image. For more throughput run more processes (each with its own
pipeline and GPU) and set PROMETHEUS_MULTIPROC_DIR so /metrics adds up every worker.

Privacy: the response's report has trigger offsets but no prompt text, and nothing here logs prompts.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import torch
from diffusers.utils import logging as diffusers_logging
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from pydantic import BaseModel, ConfigDict, Field

import memguard
from memguard.metrics import GuardMetrics
from memguard.models import guard_defaults, load_pipeline

log = logging.getLogger("imagegen")
PIPELINE_LABEL = "service"  # the `pipeline` label of the guard's metrics


class GenerateRequest(BaseModel):
    # strict: `true` is not seed 1 and "30" is not 30 steps; a field this service does not know (a
    # `negative_prompt`, a misspelt `guidance_scale`) is refused, not silently dropped
    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: str = Field(min_length=1, max_length=2000)
    seed: int = Field(0, ge=0, le=2**63 - 1)
    steps: int = Field(30, ge=1, le=150)
    guidance: float = Field(7.5, ge=0.0, le=30.0)


class GenerateResponse(BaseModel):
    image_png_base64: str
    blocked: bool
    report: dict


POLICIES = ("flag", "resample", "block")


def guard_config(model: str, calibration=None, policy: str = "resample") -> memguard.GuardConfig:
    """The guard's config: `calibration` (a file from `memguard calibrate`), else the model's shipped one
    (the testbed's), and the model's registry. Re-sampling or blocking needs a calibration: without one
    the guard only observes, and a service that says it re-samples must not silently do nothing."""
    defaults = guard_defaults(model)
    calibration = calibration or defaults.calibration
    if policy not in POLICIES:
        raise ValueError(f"--policy must be one of {POLICIES}, got {policy!r}")
    if calibration is None and policy != "flag":
        raise ValueError(
            f"--policy {policy} needs --calibration FILE for this model (make one with `memguard calibrate "
            f"--model {model} --out calibration.json`); without one the guard only observes: use --policy flag"
        )
    return memguard.GuardConfig(
        calibration=calibration, registry=defaults.registry, policy=memguard.Policy.uniform(policy)
    )


def load_guarded(model: str = "testbed", calibration=None, policy: str = "resample"):
    """The model under a guard (see `guard_config`)."""
    config = guard_config(model, calibration, policy)
    pipe, _ = load_pipeline(model, device="cuda" if torch.cuda.is_available() else "cpu")
    return memguard.guard(pipe, config)


def create_app(
    pipe=None,
    *,
    model: str = "testbed",
    calibration=None,
    policy: str = "resample",
    registry: CollectorRegistry | None = None,
) -> FastAPI:
    """The service around `pipe` (a guarded pipeline; default: `model` loaded here with `calibration`
    and `policy`, see `guard_config`).

    Metrics go to the pipeline's own `GuardConfig.metrics` when it has them (/metrics serves their
    registry), else to `registry` (default: a registry of this app's own), or, in prometheus_client's
    multiprocess mode, to PROMETHEUS_MULTIPROC_DIR, aggregated over every worker at /metrics. The
    guard's `pipeline` label is the pipeline's `GuardConfig.name`, or "service" where it kept the
    default name.
    """
    diffusers_logging.set_verbosity_error()  # diffusers warns with the truncated prompt text quoted
    pipe = pipe if pipe is not None else load_guarded(model, calibration, policy)
    config = getattr(pipe, "guard_config", None)
    if not isinstance(config, memguard.GuardConfig):
        kind = type(pipe).__name__
        raise TypeError(f"create_app: pipe must be a guarded pipeline (memguard.guard(pipe)), got {kind}")
    metrics = config.metrics
    if metrics is None:
        metrics = GuardMetrics(registry if registry is not None else CollectorRegistry())
    elif registry is not None and registry is not metrics.registry:
        raise ValueError(
            "create_app: registry differs from the registry of the pipeline's GuardConfig.metrics, where the "
            "guard counts; pass one of them, not both"
        )
    if metrics.registry is None:
        raise ValueError("create_app: the pipeline's GuardConfig.metrics has no registry for /metrics to serve")
    registry = metrics.registry
    label = config.name if config.name != memguard.GuardConfig.name else PIPELINE_LABEL
    pipe.set_progress_bar_config(disable=True)
    metrics.register_pipeline(label)  # error and outcome series at zero before the first request
    pipe.guard_config = config.replace(name=label, metrics=metrics)
    in_flight = Gauge(
        "imagegen_requests_in_flight",
        "Generate requests accepted and not yet answered (queued or running).",
        registry=registry,
        multiprocess_mode="livesum",
    )
    latency = Histogram(
        "imagegen_generate_seconds",
        "Wall time of a generate request, queueing included.",
        buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        registry=registry,
    )
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pipeline")  # the one thread that calls `pipe`

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        worker.shutdown(wait=True)

    app = FastAPI(title="memguard image generation", lifespan=lifespan)

    @app.exception_handler(RequestValidationError)
    async def refused_request(request: Request, error: RequestValidationError) -> JSONResponse:
        # FastAPI's default 422 body echoes the input, which would put the prompt in the error
        detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in error.errors()]
        return JSONResponse(status_code=422, content={"detail": detail})

    app.state.pipe = pipe
    app.state.max_in_flight = 0  # the deepest queue seen (the load test checks requests overlapped)
    app.state.in_flight = 0

    def run_pipeline(request: GenerateRequest):
        generator = torch.Generator("cpu").manual_seed(request.seed)
        output = pipe(
            request.prompt, num_inference_steps=request.steps, guidance_scale=request.guidance, generator=generator
        )
        return output.images[0], output.memorization[0]  # this call's own image and report

    @app.post("/generate", response_model=GenerateResponse)
    async def generate(request: GenerateRequest) -> GenerateResponse:
        started = time.perf_counter()
        app.state.in_flight += 1  # the event loop is single-threaded: no lock needed
        app.state.max_in_flight = max(app.state.max_in_flight, app.state.in_flight)
        in_flight.inc()
        try:
            image, report = await asyncio.get_running_loop().run_in_executor(worker, run_pipeline, request)
        except Exception as error:  # the guard counted it (memguard_guard_errors_total); no prompt in the log
            log.error("generate failed: %s", type(error).__name__)
            raise HTTPException(status_code=500, detail="generation failed") from None
        finally:
            in_flight.dec()
            app.state.in_flight -= 1
            latency.observe(time.perf_counter() - started)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return GenerateResponse(
            image_png_base64=base64.b64encode(buffer.getvalue()).decode("ascii"),
            blocked=report.action == "blocked",
            report=report.to_dict(include_text=False),
        )

    @app.get("/metrics")
    def metrics() -> Response:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # every worker's files, not this process's registry
            exposed = CollectorRegistry()
            MultiProcessCollector(exposed)
        else:
            exposed = registry
        return Response(generate_latest(exposed), media_type=CONTENT_TYPE_LATEST)

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="memguard image-generation service")
    parser.add_argument("--model", default="testbed", help="testbed, tiny, or a diffusers model id / path")
    parser.add_argument("--calibration", default=None, help="calibration JSON of the model (memguard calibrate)")
    parser.add_argument("--policy", choices=POLICIES, default="resample", help="action on unwanted memorization")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    try:
        app = create_app(model=args.model, calibration=args.calibration, policy=args.policy)
    except ValueError as error:  # a bad calibration file, or a policy that needs one
        parser.error(str(error))
    uvicorn.run(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
