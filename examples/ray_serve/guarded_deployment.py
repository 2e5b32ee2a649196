"""A guarded text-to-image deployment on Ray Serve: concurrent requests batched into one guarded call,
autoscaling, a health check, and memguard's metrics of every replica on a node in one scrape.

    pip install 'memguard[serve-ray]'
    cd examples/ray_serve
    serve run serve_config.yaml                              # autoscaling, GPUs and arguments from the file
    serve run guarded_deployment:build_app model=testbed     # or arguments on the command line
    curl -s localhost:8000/generate -H 'content-type: application/json' \\
         -d '{"prompt": "a large orange circle, top right", "seed": 1, "request_id": "r1"}'
    curl -s localhost:9464/metrics                           # this node's replicas, added up

Batching: requests that arrive within `batch_wait_timeout_s` (up to `max_batch_size`) make ONE guarded
pipeline call: a list of prompts and one generator per image, seeded with its request's seed. Each
image's starting noise comes from its own generator, so a request gets the image (and report) it
would get alone; each response carries its own image, its own report and the caller's `request_id`.
Steps and guidance are the deployment's (by default the calibration's): a batch shares them, and a
threshold is only valid at the steps and guidance it was calibrated with.

Metrics: every replica writes memguard's metrics in prometheus_client's multiprocess mode to
`metrics_dir` (set as PROMETHEUS_MULTIPROC_DIR for the replica processes). One replica per node serves
the directory's sum on `metrics_port`; the health check lets another take the port over if that
replica goes. One scrape per node therefore sees every replica on it, counters of replaced replicas
included, so counters never go backwards. The metric names are the library's own (no `ray_` prefix),
so the same dashboard and alert rules serve this and the FastAPI example.

Privacy: responses carry trigger offsets but no prompt text; a failed call is logged with its
exception class only, and the client gets "generation failed".
"""

# No `from __future__ import annotations`: FastAPI reads the route signatures' types at run time, and
# Serve's class ingress rewrites them, so they must be objects, not strings.
import asyncio
import base64
import io
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.multiprocess import mark_process_dead
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ray import serve

import memguard
from memguard.calibration import Calibration
from memguard.intent.registry import IntentRegistry
from memguard.metrics import GuardMetrics
from memguard.metrics import serve as serve_metrics
from memguard.models import guard_defaults, load_pipeline

log = logging.getLogger("memguard.ray_serve")

# build_app adds target_ongoing_requests = max_batch_size: scale out when replicas hold more than a batch each
DEFAULT_AUTOSCALING = {"min_replicas": 1, "max_replicas": 4, "upscale_delay_s": 10, "downscale_delay_s": 300}


class AppArgs(BaseModel):
    """The application's arguments: `serve run guarded_deployment:build_app key=value ...` or the
    config file's `args`. Strings from the command line are converted to the field types."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field("testbed", description="testbed, tiny, or a diffusers model id / local path")
    dtype: Literal["float32", "float16", "bfloat16"] = Field(
        "float32", description="the weights' dtype; calibrate with the same one (it is part of the fingerprint)"
    )
    calibration: str | None = Field(None, description="calibration JSON (default: the model's shipped one)")
    registry: str | None = Field(None, description="intent registry YAML (default: the model's shipped one)")
    steps: int | None = Field(None, ge=1, le=500, description="default: the calibration's num_inference_steps")
    guidance: float | None = Field(None, ge=0.0, le=30.0, description="default: the calibration's guidance_scale")
    policy: Literal["flag", "resample", "block"] = "resample"
    pipeline_name: str = Field("imagegen", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="metrics label")
    max_batch_size: int = Field(8, ge=1, le=256)
    batch_wait_timeout_s: float = Field(0.05, ge=0.0, le=10.0)
    num_replicas: int | None = Field(None, ge=1, description="a fixed count; None: autoscaling")
    num_cpus: float = Field(1.0, ge=0.0)
    num_gpus: float = Field(0.0, ge=0.0, description="per replica; 0.5 puts two replicas on one GPU")
    metrics_dir: str = Field("/tmp/memguard-metrics", min_length=1, description="node-local, one per app")
    metrics_host: str = Field("127.0.0.1", description="0.0.0.0 to let a Prometheus on another host scrape")
    metrics_port: int = Field(9464, ge=1, le=65535)


def parse_args(args: dict) -> AppArgs:
    """`AppArgs` from a dict; a bad value is a ValueError naming the argument."""
    try:
        return AppArgs.model_validate(args)
    except ValidationError as error:
        problems = "; ".join(f"'{'.'.join(map(str, e['loc']))}': {e['msg']}" for e in error.errors())
        raise ValueError(f"ray_serve application argument {problems}") from None


@dataclass(frozen=True)
class GuardFiles:
    """The calibration and intent registry every replica uses, read once where the app is built, so
    every replica gets the same threshold without a shared file system."""

    calibration: Calibration | None
    registry: IntentRegistry | None


def load_guard_files(args: AppArgs) -> GuardFiles:
    defaults = guard_defaults(args.model)
    calibration_path = args.calibration or defaults.calibration
    registry_path = args.registry or defaults.registry
    try:
        calibration = Calibration.load(calibration_path) if calibration_path else None
        registry = IntentRegistry.load(registry_path) if registry_path else None
    except ValueError as error:  # both name the file and what is wrong with it
        raise ValueError(f"ray_serve application argument 'calibration' / 'registry': {error}") from None
    if calibration is None:
        log.warning("no calibration for model %s: the guard uses its uncalibrated default threshold", args.model)
    return GuardFiles(calibration, registry)


class GenerateRequest(BaseModel):
    # strict: `true` is not seed 1; a field this service does not know is refused, not silently dropped
    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: str = Field(min_length=1, max_length=2000)
    seed: int = Field(0, ge=0, le=2**63 - 1)
    request_id: str = Field("", max_length=128, description="the caller's key, echoed back")


class GenerateResponse(BaseModel):
    request_id: str
    image_png_base64: str
    blocked: bool
    report: dict
    batch_size: int  # requests that shared this guarded call


@dataclass
class ReplicaHealth:
    """A replica whose device or model broke fails every call: after `max_failed_calls` failed guarded
    calls in a row the health check fails, and Serve replaces the replica."""

    max_failed_calls: int = 3
    failed_in_a_row: int = 0

    def record(self, succeeded: bool) -> None:
        self.failed_in_a_row = 0 if succeeded else self.failed_in_a_row + 1

    def check(self) -> None:
        if self.failed_in_a_row >= self.max_failed_calls:
            raise RuntimeError(f"the last {self.failed_in_a_row} guarded calls failed")


class NodeMetricsEndpoint:
    """The node's metrics port: every replica tries to bind it and the first one on the node serves the
    multiprocess directory (all replicas there); the others find it taken and retry at each health
    check, so when the serving replica goes another one takes over."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.server = None

    def hold(self) -> bool:
        if self.server is None:
            try:
                self.server, _ = serve_metrics(self.port, addr=self.host)
            except OSError:  # taken: another replica on this node serves the same directory
                return False
        return True

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


_LIVE_GAUGE_FILE = re.compile(r"gauge_live\w+_(\d+)\.db")


def sweep_dead_processes(metrics_dir: str) -> None:
    """Drop the live gauges of replicas that died without shutting down (their counters stay), so a
    replaced model's threshold series does not linger. The directory is node-local: pids are this node's."""
    for name in os.listdir(metrics_dir):
        match = _LIVE_GAUGE_FILE.fullmatch(name)
        if match and not _alive(int(match.group(1))):
            mark_process_dead(int(match.group(1)), metrics_dir)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def _png_base64(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


api = FastAPI(title="memguard image generation (Ray Serve)")


@api.exception_handler(RequestValidationError)
async def refused_request(request: Request, error: RequestValidationError) -> JSONResponse:
    """422 naming the field and the rule, without FastAPI's echo of the input (it may be a prompt)."""
    detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in error.errors()]
    return JSONResponse(status_code=422, content={"detail": detail})


@serve.deployment(health_check_period_s=10, health_check_timeout_s=30, graceful_shutdown_timeout_s=30)
@serve.ingress(api)
class GuardedGenerator:
    """One guarded pipeline per replica; `build_app` sets resources, replicas and autoscaling."""

    def __init__(self, args: AppArgs, files: GuardFiles):
        metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if not metrics_dir:
            raise RuntimeError("PROMETHEUS_MULTIPROC_DIR is not set for this replica (build the app with build_app)")
        Path(metrics_dir).mkdir(parents=True, exist_ok=True)  # before the first metric value is written
        sweep_dead_processes(metrics_dir)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # Ray sets the visible GPUs
        calibration = files.calibration
        self.steps = args.steps or (calibration.num_inference_steps if calibration else 50)
        self.guidance = args.guidance
        if self.guidance is None:
            self.guidance = calibration.guidance_scale if calibration else 7.5
        metrics = GuardMetrics(CollectorRegistry())  # multiprocess mode: values go to metrics_dir
        config = memguard.GuardConfig(
            name=args.pipeline_name,
            metrics=metrics,
            calibration=calibration,
            registry=files.registry,
            policy=memguard.Policy.uniform(args.policy),
        )
        pipe, _ = load_pipeline(args.model, device=self.device, dtype=getattr(torch, args.dtype))
        self.pipe = memguard.guard(pipe, config)
        if calibration is not None:
            calibration.check_model(self.pipe)  # the same file on every replica, measured on this model
        metrics.register_pipeline(args.pipeline_name)  # error series at zero before the first request
        self.batch_sizes = Histogram(
            "imagegen_batch_size",
            "Requests served by one guarded call.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=metrics.registry,
        )
        self.generate_batch.set_max_batch_size(args.max_batch_size)
        self.generate_batch.set_batch_wait_timeout_s(args.batch_wait_timeout_s)
        self.pipeline_lock = threading.Lock()  # one call at a time: the pipeline and its hooks are not reentrant
        self.health = ReplicaHealth()
        self.metrics_endpoint = NodeMetricsEndpoint(args.metrics_host, args.metrics_port)
        self.metrics_endpoint.hold()

    @api.post("/generate", response_model=GenerateResponse)
    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        response = await self.generate_batch(request)
        if response is None:
            raise HTTPException(status_code=500, detail="generation failed")
        return response

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05)  # both replaced by the app's arguments
    async def generate_batch(self, requests: list[GenerateRequest]) -> list[GenerateResponse | None]:
        # in a thread: the replica's event loop keeps accepting requests (the next batch forms meanwhile)
        return await asyncio.to_thread(self._generate, requests)

    def _generate(self, requests: list[GenerateRequest]) -> list[GenerateResponse | None]:
        generators = [torch.Generator("cpu").manual_seed(request.seed) for request in requests]
        try:
            with self.pipeline_lock:
                output = self.pipe(
                    [request.prompt for request in requests],
                    num_inference_steps=self.steps,
                    guidance_scale=self.guidance,
                    generator=generators,
                )
        except Exception as error:  # counted by the guard; the message may quote a prompt, the class does not
            self.health.record(succeeded=False)
            log.error("guarded call of %d requests failed: %s", len(requests), type(error).__name__)
            return [None] * len(requests)
        self.health.record(succeeded=True)
        self.batch_sizes.observe(len(requests))
        return [
            GenerateResponse(
                request_id=request.request_id,
                image_png_base64=_png_base64(image),
                blocked=report.action == "blocked",
                report=report.to_dict(include_text=False),
                batch_size=len(requests),
            )
            for request, image, report in zip(requests, output.images, output.memorization, strict=True)
        ]

    def check_health(self) -> None:
        """Serve calls this every `health_check_period_s`; raising marks the replica unhealthy."""
        self.health.check()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # raises once the device is lost
        self.metrics_endpoint.hold()

    def __del__(self):  # Serve's graceful shutdown of this replica
        endpoint = getattr(self, "metrics_endpoint", None)
        if endpoint is not None:
            endpoint.close()
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            mark_process_dead(os.getpid())  # its live gauges go; its counters stay in the node's sum


def build_app(args: dict) -> serve.Application:
    """The application: `serve run guarded_deployment:build_app key=value ...` or a config file's
    `import_path` and `args` (see AppArgs). Deployment options in a config file override these."""
    settings = parse_args(args)
    files = load_guard_files(settings)
    options = {
        "ray_actor_options": {
            "num_cpus": settings.num_cpus,
            "num_gpus": settings.num_gpus,
            "runtime_env": {"env_vars": {"PROMETHEUS_MULTIPROC_DIR": settings.metrics_dir}},
        },
        # a full batch running plus the next one forming; batch size x 2 also keeps Serve's check quiet
        "max_ongoing_requests": 2 * settings.max_batch_size,
    }
    if settings.num_replicas is not None:
        options["num_replicas"] = settings.num_replicas
    else:
        options["autoscaling_config"] = {**DEFAULT_AUTOSCALING, "target_ongoing_requests": settings.max_batch_size}
    return GuardedGenerator.options(**options).bind(settings, files)
