"""Threads: one guarded wrapper per thread runs correctly on shared weights; concurrent calls on ONE
object are refused at once, never mixed."""

import threading

import numpy as np
import pytest
import torch

import memguard
from memguard import GuardConfig, Policy
from memguard.pipelines.mixin import CONCURRENT_CALL
from memguard.signals import is_installed

THREADS = 8
CALLS = 3
STEPS = 3
PROMPTS = [
    f"a {colour} {shape} on a {background} background"
    for colour, shape, background in [
        ("red", "circle", "blue"),
        ("green", "square", "white"),
        ("yellow", "star", "black"),
        ("blue", "ring", "grey"),
    ]
]


def _request(thread: int, call: int) -> tuple[str, int]:
    return PROMPTS[(thread + call) % len(PROMPTS)], 100 * thread + call


def _run(pipe, prompt: str, seed: int):
    return pipe(prompt, num_inference_steps=STEPS, generator=torch.Generator().manual_seed(seed), output_type="np")


def _config(shared_base_pipe) -> GuardConfig:
    # a threshold among the requests' scores, so some calls re-sample and some do not
    probe = memguard.guard(shared_base_pipe, GuardConfig(policy=Policy.uniform("flag"), threshold=-1.0))
    scores = sorted(_run(probe, *_request(t, c)).memorization[0].score for t in range(THREADS) for c in range(CALLS))
    return GuardConfig(threshold=scores[len(scores) // 2], policy=Policy(max_attempts=1))


def _alone(guarded, requests):
    return {request: _run(guarded, *request) for request in requests}


def test_one_wrapper_per_thread_gives_every_request_its_own_image_and_report(shared_base_pipe):
    config = _config(shared_base_pipe)
    requests = {_request(t, c) for t in range(THREADS) for c in range(CALLS)}
    alone = _alone(memguard.guard(shared_base_pipe, config), requests)
    assert {out.memorization[0].action for out in alone.values()} == {"none", "resampled"}  # both paths run
    results, errors = {}, []
    barrier = threading.Barrier(THREADS)

    def worker(thread: int):
        guarded = memguard.guard(shared_base_pipe, config)  # the documented way: one wrapper per thread
        barrier.wait()
        try:
            for call in range(CALLS):
                request = _request(thread, call)
                results[(thread, call)] = (request, _run(guarded, *request))
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(results) == THREADS * CALLS
    for request, out in results.values():
        expected = alone[request]
        assert np.array_equal(out.images, expected.images)
        report, reference = out.memorization[0], expected.memorization[0]
        assert (report.action, report.score) == (reference.action, reference.score)
    assert not is_installed(shared_base_pipe.unet)


def test_concurrent_calls_on_one_object_are_refused_at_once_with_how_to_serve_threads(shared_base_pipe):
    guarded = memguard.guard(shared_base_pipe)
    started, release = threading.Event(), threading.Event()

    def slow(pipe, step, timestep, kwargs):
        started.set()
        release.wait(timeout=30)
        return kwargs

    holder = threading.Thread(target=lambda: _run_with(guarded, slow))
    holder.start()
    assert started.wait(timeout=30)
    with pytest.raises(RuntimeError, match="one wrapper each: `memguard.guard\\(pipe\\)` per thread"):
        _run(guarded, PROMPTS[0], 1)
    release.set()
    holder.join()
    assert len(_run(guarded, PROMPTS[0], 1).memorization) == 1  # free again once the call ended


def _run_with(guarded, callback):
    guarded(PROMPTS[0], num_inference_steps=STEPS, callback_on_step_end=callback, output_type="np")


def test_eight_threads_on_one_object_never_mix_images_or_reports(shared_base_pipe):
    config = _config(shared_base_pipe)
    guarded = memguard.guard(shared_base_pipe, config)
    requests = {_request(t, c) for t in range(THREADS) for c in range(CALLS)}
    alone = _alone(memguard.guard(shared_base_pipe, config), requests)
    outcomes = []
    barrier = threading.Barrier(THREADS)

    def worker(thread: int):
        barrier.wait()
        for call in range(CALLS):
            request = _request(thread, call)
            try:
                outcomes.append((request, _run(guarded, *request)))
            except RuntimeError as error:
                outcomes.append((request, error))

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(outcomes) == THREADS * CALLS
    for request, outcome in outcomes:
        if isinstance(outcome, RuntimeError):
            assert str(outcome) == CONCURRENT_CALL
            continue
        assert np.array_equal(outcome.images, alone[request].images)
        assert outcome.memorization[0].score == alone[request].memorization[0].score
