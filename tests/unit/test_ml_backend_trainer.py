"""The ML backend's training pool: bounded threads and queue, coalescing per project, rate limit."""

from __future__ import annotations

import threading
import time

from labelstack_ml.trainer import Trainer
from labelstack_testlib import wait_for


class Recorder:
    """A run that records (project, event, start time) and blocks until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.runs: list[tuple[int, str, float]] = []

    def __call__(self, project: int, event: str) -> None:
        self.runs.append((project, event, time.monotonic()))
        self.release.wait(30)


def idle(trainer: Trainer) -> bool | None:
    return not trainer.busy() or None


def test_a_thousand_projects_do_not_start_a_thousand_threads() -> None:
    run = Recorder()
    trainer = Trainer(run, workers=2, max_pending=50, delay=0.0, interval=0.0)
    before = threading.active_count()
    accepted = [p for p in range(1, 1001) if trainer.schedule(p, "ANNOTATION_CREATED")]
    peak_threads = threading.active_count() - before
    # 50 waiting, plus at most the 2 a worker took off the queue while the loop ran.
    assert 50 <= len(accepted) <= 52, len(accepted)
    assert peak_threads <= 2
    assert len(trainer.busy()) == len(accepted)
    run.release.set()
    wait_for(lambda: idle(trainer), 30, "the accepted runs never finished", 0.05)
    assert sorted(p for p, _, _ in run.runs) == accepted
    assert threading.active_count() - before <= 2


def test_events_of_one_project_coalesce_into_one_run() -> None:
    run = Recorder()
    run.release.set()
    trainer = Trainer(run, workers=2, max_pending=10, delay=0.3, interval=0.0)
    assert all(trainer.schedule(7, f"EVENT_{i}") for i in range(100))
    wait_for(lambda: idle(trainer), 10, "the run never finished", 0.05)
    assert [(p, e) for p, e, _ in run.runs] == [(7, "EVENT_99")]


def test_events_during_a_run_bring_exactly_one_more_run() -> None:
    run = Recorder()
    trainer = Trainer(run, workers=2, max_pending=10, delay=0.0, interval=0.0)
    trainer.schedule(7, "FIRST")
    wait_for(lambda: run.runs or None, 10, "the first run never started", 0.05)
    for i in range(20):
        trainer.schedule(7, f"DURING_{i}")
    assert trainer.busy() == [7]
    run.release.set()
    wait_for(lambda: idle(trainer), 10, "the follow-up run never finished", 0.05)
    assert [e for _, e, _ in run.runs] == ["FIRST", "DURING_19"]


def test_runs_of_a_project_start_at_least_the_interval_apart() -> None:
    run = Recorder()
    run.release.set()
    trainer = Trainer(run, workers=2, max_pending=10, delay=0.0, interval=0.5)
    trainer.schedule(7, "A")
    wait_for(lambda: idle(trainer), 10, "the first run never finished", 0.05)
    trainer.schedule(7, "B")
    wait_for(lambda: idle(trainer), 10, "the second run never finished", 0.05)
    (_, _, first), (_, _, second) = run.runs
    assert second - first >= 0.5


def test_a_failing_run_does_not_stop_the_pool() -> None:
    done: list[int] = []

    def run(project: int, event: str) -> None:
        if project == 1:
            raise RuntimeError("Label Studio is down")
        done.append(project)

    trainer = Trainer(run, workers=1, max_pending=10, delay=0.0, interval=0.0)
    trainer.schedule(1, "A")
    trainer.schedule(2, "A")
    wait_for(lambda: idle(trainer), 10, "the runs never finished", 0.05)
    assert done == [2]
