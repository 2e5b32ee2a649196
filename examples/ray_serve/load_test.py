"""Fire concurrent generate requests at a running deployment and print wall time and latency quantiles.

    python examples/ray_serve/load_test.py --url http://127.0.0.1:8000 --requests 200 --distinct 20

Requests cycle through a few prompts and seeds (`--distinct` pairs), all sent at once; each carries
its index as `request_id`. Prints one JSON line: requests, wall seconds, latency p50/p95, the batch
sizes the deployment reported, and the share of responses that came back with status 200. Prompts are
generic test phrases; nothing here prints a prompt.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from dataclasses import dataclass

import httpx

PROMPTS = (
    "a large orange circle, top right",
    "a small blue square at the bottom left",
    "two green triangles side by side",
    "a purple ring in the middle",
    "a yellow star on a dark background",
)


@dataclass(frozen=True)
class Sent:
    """One request and what came back."""

    index: int
    payload: dict
    status: int
    body: dict | None
    seconds: float


async def send_all(url: str, payloads: list[dict], timeout_s: float = 300.0) -> list[Sent]:
    """POST every payload to `url`/generate at once; results in payload order."""
    limits = httpx.Limits(max_connections=len(payloads), max_keepalive_connections=len(payloads))
    async with httpx.AsyncClient(base_url=url, timeout=timeout_s, limits=limits) as client:

        async def one(index: int, payload: dict) -> Sent:
            started = time.perf_counter()
            response = await client.post("/generate", json=payload)
            seconds = time.perf_counter() - started
            body = response.json() if response.status_code == 200 else None
            return Sent(index, payload, response.status_code, body, seconds)

        return await asyncio.gather(*(one(i, p) for i, p in enumerate(payloads)))


def quantile(values: list[float], q: float) -> float:
    """The q-quantile (inclusive method), 0 < q < 1."""
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def summary(sent: list[Sent], wall_s: float) -> dict:
    latencies = [s.seconds for s in sent]
    batches = [s.body["batch_size"] for s in sent if s.body is not None]
    return {
        "requests": len(sent),
        "ok": sum(s.status == 200 for s in sent) / len(sent),
        "wall_s": round(wall_s, 2),
        "latency_p50_s": round(quantile(latencies, 0.50), 3),
        "latency_p95_s": round(quantile(latencies, 0.95), 3),
        "batch_size_max": max(batches, default=0),
        "batch_size_mean": round(statistics.fmean(batches), 2) if batches else 0.0,
    }


def payloads(requests: int, distinct: int) -> list[dict]:
    pairs = [(PROMPTS[k % len(PROMPTS)], k) for k in range(distinct)]
    return [
        {"prompt": pairs[i % distinct][0], "seed": pairs[i % distinct][1], "request_id": str(i)}
        for i in range(requests)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--distinct", type=int, default=10, help="distinct (prompt, seed) pairs")
    args = parser.parse_args()
    started = time.perf_counter()
    sent = asyncio.run(send_all(args.url, payloads(args.requests, args.distinct)))
    print(json.dumps(summary(sent, time.perf_counter() - started)))


if __name__ == "__main__":
    main()
