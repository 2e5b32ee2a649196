"""Prometheus metrics of the guard.

Every guarded call is counted: images by outcome, scores, decision steps, the guard's own time,
errors, the threshold in force, and whether the calibration's prompts span each prompt's length.
Labels are low-cardinality by construction: the operator's pipeline name (`GuardConfig.name`), the
outcome, the coverage, where an error came from and its class (bounded, see `error_kind`), the
threshold's source and the model fingerprint — never a prompt, a token or a file path.

Errors are counted by source: "guard" (the guard itself failed: a hook, a signal, a score, a
re-sample; `GuardConfig.on_error` decided what the caller got) apart from "pipeline" (the guarded
call raised from outside the guard: diffusers, the VAE, the caller's callback, invalid arguments or a
config the call cannot run with, also when they happen in a re-sample).
Series that alerts divide or take `increase()` of (images by outcome and coverage, errors by source) exist at
zero from the moment a pipeline name is registered, so the first error or blocked image is a change
Prometheus can see rather than a series that appears with its first sample.

- Default: `default_metrics()` registers once on prometheus_client's default `REGISTRY`.
- Your own registry: `GuardConfig(metrics=GuardMetrics(registry=my_registry))`.
- Multiprocess servers (gunicorn etc.): set `PROMETHEUS_MULTIPROC_DIR` before the workers start, as
  prometheus_client documents; `serve()` (or your `/metrics` route, with a `MultiProcessCollector`)
  then aggregates every worker. The threshold gauge uses multiprocess mode "livemostrecent": call
  `prometheus_client.multiprocess.mark_process_dead(pid)` for a worker that exits.
- Expose: `memguard.metrics.serve(9464)` (loopback by default), or mount
  `prometheus_client.make_wsgi_app(registry)` / `make_asgi_app` on your own server.
"""

from __future__ import annotations

import math
import os
import re
import threading
from collections.abc import Sequence
from typing import Literal

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.multiprocess import MultiProcessCollector

from .errors import MemguardValueError
from .report import OUTCOMES, MemorizationReport

# wide enough for every detector: noise RMS (~0.01-1), normalized entropies (0-1, benign ~0.9) and the
# upper range of standardized scores (top_layer_entropy, attention_spread, attention_noise: memorized
# about 2-6). No negative bound: prometheus_client then stops exporting _sum, and scores at or below
# 0.01 land in the first bucket.
SCORE_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 0.85, 0.9, 0.95, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
STEP_BUCKETS = (1, 2, 3, 5, 10, 20, 50)
SECONDS_BUCKETS = (0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0)

# every value `outcome()` can return (report.OUTCOMES); each registered pipeline has all of them from the start
ErrorSource = Literal["guard", "pipeline"]
ERROR_SOURCES: tuple[ErrorSource, ...] = ("guard", "pipeline")
# a checked image's prompt against its calibration's benign prompt lengths (Calibration.coverage);
# "unknown": no calibrated threshold that records them, or prompt embeddings
COVERAGES = ("covered", "shorter", "longer", "unknown")
PIPELINE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # what GuardConfig.name allows
# Exception classes defined in these packages form a fixed set; a class from anywhere else (the
# caller's own callback, say) is counted as "other", so no code outside them can grow the series.
KNOWN_ERROR_PACKAGES = frozenset(
    {
        "builtins",
        "memguard",
        "torch",
        "diffusers",
        "transformers",
        "accelerate",
        "safetensors",
        "huggingface_hub",
        "numpy",
        "PIL",
        "faiss",
    }
)


def outcome(report: MemorizationReport) -> str:
    """The `outcome` label of one image: the report's own `outcome` (one name everywhere)."""
    return report.outcome


def error_kind(error: BaseException) -> str:
    """The `kind` label of an error: its class name when the class comes from Python or a library
    memguard runs on (`KNOWN_ERROR_PACKAGES`), else "other". Never the message, which may quote a prompt."""
    cls = type(error)
    package = (cls.__module__ or "").split(".")[0]
    return cls.__name__ if package in KNOWN_ERROR_PACKAGES else "other"


class GuardMetrics:
    """The guard's metric families, registered on one `CollectorRegistry`.

    A pipeline name is registered on first use (any `observe_*` call) or explicitly with
    `register_pipeline`; registering creates its error and outcome series at zero.
    """

    def __init__(self, registry: CollectorRegistry | None = REGISTRY):
        self.registry = registry
        self._registered: set[str] = set()
        self._registered_lock = threading.Lock()
        self._threshold_labels: dict[str, tuple[str, str, str]] = {}  # each pipeline's threshold series now
        try:
            self.images = Counter(
                "memguard_images",
                "Images generated under the guard, by outcome.",
                ["pipeline", "outcome"],
                registry=registry,
            )
            self.score = Histogram(
                "memguard_detection_score",
                "Memorization score of checked images at the decision step.",
                ["pipeline"],
                buckets=SCORE_BUCKETS,
                registry=registry,
            )
            self.decision_step = Histogram(
                "memguard_decision_step",
                "Denoising step at which the guard decided (1 = the first step).",
                ["pipeline"],
                buckets=STEP_BUCKETS,
                registry=registry,
            )
            self.guard_seconds = Histogram(
                "memguard_guard_overhead_seconds",
                "Seconds the guard itself spent in one pipeline call.",
                ["pipeline"],
                buckets=SECONDS_BUCKETS,
                registry=registry,
            )
            self.errors = Counter(
                "memguard_guard_errors",
                "Errors in guarded calls, by source: guard (the guard failed; on_error decided) or pipeline "
                "(the call raised outside the guard).",
                ["pipeline", "source"],
                registry=registry,
            )
            self.error_kinds = Counter(
                "memguard_guard_errors_by_kind",
                "Errors in guarded calls by source and exception class (library classes; 'other' for the rest).",
                ["pipeline", "source", "kind"],
                registry=registry,
            )
            self.resamples = Histogram(
                "memguard_resample_attempts",
                "Re-samples made for an image the policy sent to re-sampling.",
                ["pipeline"],
                buckets=(0, 1, 2, 3, 5, 10),
                registry=registry,
            )
            self.mitigations = Counter(
                "memguard_mitigations",
                "Re-samples by mitigation strategy (class names, never prompt content).",
                ["pipeline", "mitigation"],
                registry=registry,
            )
            self.copy_checks = Counter(
                "memguard_copy_checks",
                "Returned images checked against the copy verification index, by result (copy, clean).",
                ["pipeline", "result"],
                registry=registry,
            )
            self.coverage = Counter(
                "memguard_calibration_coverage",
                "Checked images by whether the calibration's benign prompts span their prompt's length in "
                "tokens: covered, shorter, longer (than every calibration prompt), unknown.",
                ["pipeline", "coverage"],
                registry=registry,
            )
            self.threshold = Gauge(
                "memguard_threshold",
                "Detection threshold in force, by its source (calibration, config, default) and model fingerprint.",
                ["pipeline", "source", "model_fingerprint"],
                # the latest value over live processes: once a worker is marked dead
                # (multiprocess.mark_process_dead), the threshold of a model it served is gone with it
                multiprocess_mode="livemostrecent",
                registry=registry,
            )
        except ValueError as err:  # prometheus_client: "Duplicated timeseries in CollectorRegistry"
            if "Duplicated timeseries" not in str(err):
                raise
            raise MemguardValueError(
                "this CollectorRegistry holds memguard's metrics already (another GuardMetrics on it): "
                "pass that GuardMetrics object to every guard that counts there"
            ) from None

    def register_pipeline(self, pipeline: str) -> None:
        """Create `pipeline`'s error series (both sources), image series (every outcome) and coverage
        series (every coverage) at zero.

        Idempotent and cheap after the first call. The guard calls it when a guarded pipeline is
        configured, so a dashboard shows the pipeline, and an `increase()` alert sees its first error,
        before any traffic."""
        if isinstance(pipeline, str) and pipeline in self._registered:
            return
        if not isinstance(pipeline, str) or not PIPELINE_NAME.fullmatch(pipeline):
            raise ValueError(f"pipeline name must be 1-64 letters, digits or '_.-' (a metric label), got {pipeline!r}")
        with self._registered_lock:
            if pipeline in self._registered:
                return
            for source in ERROR_SOURCES:
                self.errors.labels(pipeline, source)
            for name in OUTCOMES:
                self.images.labels(pipeline, name)
            for name in COVERAGES:
                self.coverage.labels(pipeline, name)
            self._registered.add(pipeline)

    def observe_call(self, pipeline: str, reports: Sequence[MemorizationReport]) -> None:
        self.register_pipeline(pipeline)
        for report in reports:
            self.images.labels(pipeline, outcome(report)).inc()
            if report.status == "checked":
                self.score.labels(pipeline).observe(report.score)
                self.decision_step.labels(pipeline).observe(report.decided_at_step)
                self.coverage.labels(pipeline, report.calibration_coverage or "unknown").inc()
            if report.copy is not None:
                self.copy_checks.labels(pipeline, "copy" if report.copy.copied else "clean").inc()
            if report.resamples:
                self.resamples.labels(pipeline).observe(report.resamples)
                for attempt in report.attempts[1:]:
                    self.mitigations.labels(pipeline, attempt.mitigation or "none").inc()
        if reports and reports[0].status != "disabled":
            # guard_seconds is the whole call's, the same on each of its reports
            self.guard_seconds.labels(pipeline).observe(reports[0].guard_seconds)

    def observe_threshold(self, pipeline: str, value: float, source: str, model_fingerprint: str = "") -> None:
        """The threshold now in force for `pipeline`: one series per pipeline, so the series of a
        threshold it no longer uses (another source, another model) is dropped; in multiprocess mode,
        where every process's file keeps its series, it is set to NaN instead."""
        self.register_pipeline(pipeline)
        labels = (pipeline, source, model_fingerprint)
        with self._registered_lock:
            previous = self._threshold_labels.get(pipeline)
            self._threshold_labels[pipeline] = labels
        if previous is not None and previous != labels:
            self.threshold.labels(*previous).set(math.nan)
            if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # there the files keep it (NaN); removal is unsupported
                self.threshold.remove(*previous)
        self.threshold.labels(*labels).set(value)

    def observe_guard_error(self, pipeline: str, error: BaseException) -> None:
        """The guard itself failed (a hook, a signal, a score, a re-sample, a copy check)."""
        self._observe_error(pipeline, "guard", error)

    def observe_pipeline_error(self, pipeline: str, error: BaseException) -> None:
        """The guarded call raised from outside the guard: the pipeline, the VAE, the caller's
        callback, or arguments the call refused."""
        self._observe_error(pipeline, "pipeline", error)

    def observe_error(self, pipeline: str, error: BaseException) -> None:
        """Deprecated: counts `error` as the guard's own (`observe_guard_error`). Callers that know
        where an error came from use `observe_guard_error` or `observe_pipeline_error`."""
        self.observe_guard_error(pipeline, error)

    def _observe_error(self, pipeline: str, source: ErrorSource, error: BaseException) -> None:
        self.register_pipeline(pipeline)
        self.errors.labels(pipeline, source).inc()
        self.error_kinds.labels(pipeline, source, error_kind(error)).inc()


_default: GuardMetrics | None = None
_default_lock = threading.Lock()


def default_metrics() -> GuardMetrics:
    """The process-wide metrics on prometheus_client's default registry (created on first use)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = GuardMetrics(REGISTRY)
        return _default


def serve(port: int, addr: str = "127.0.0.1", registry: CollectorRegistry | None = None):
    """Serve `/metrics` over HTTP on `addr:port` (loopback unless told otherwise); returns (server, thread).

    In multiprocess mode (`PROMETHEUS_MULTIPROC_DIR` set) and without an explicit registry, the
    endpoint aggregates every process's metrics.
    """
    if registry is None:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
        else:
            registry = REGISTRY
    return start_http_server(port, addr=addr, registry=registry)
