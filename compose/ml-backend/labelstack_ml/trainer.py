"""Training runs on a bounded pool: a flood of events (or of project ids) costs queue slots, never threads."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger("labelstack_ml")


class Trainer:
    """Runs run(project, event) on `workers` threads.

    Per project at most one run waits and one runs: events that arrive meanwhile coalesce into the next run
    (with the latest event). At most `max_pending` projects wait; schedule() refuses more. A run starts
    `delay` seconds after its first event (a burst of annotations becomes one run) and at least `interval`
    seconds after the project's previous run started (rate limit: each run reads the project from Label Studio).
    """

    def __init__(
        self, run: Callable[[int, str], None], *, workers: int, max_pending: int, delay: float, interval: float
    ) -> None:
        self.run = run
        self.max_pending = max_pending
        self.delay = delay
        self.interval = interval
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="train")
        self.lock = threading.Lock()
        self.waiting: dict[int, str] = {}  # project -> latest event, a job submitted for it
        self.running: set[int] = set()
        self.again: dict[int, str] = {}  # events that arrived during a run: one more run after it
        self.started: dict[int, float] = {}  # project -> monotonic start of its last run

    def schedule(self, project: int, event: str) -> bool:
        """Queue a run of `project` (or fold `event` into the queued one); False when the queue is full."""
        with self.lock:
            if project in self.running:
                self.again[project] = event
                return True
            if project in self.waiting:
                self.waiting[project] = event
                return True
            if len(self.waiting) >= self.max_pending:
                return False
            self.waiting[project] = event
        self.pool.submit(self._job, project)
        return True

    def busy(self) -> list[int]:
        """Projects with a run waiting or going: empty once every event so far is learned."""
        with self.lock:
            return sorted(set(self.waiting) | self.running | set(self.again))

    def _job(self, project: int) -> None:
        with self.lock:
            previous = self.started.get(project)
        due = self.delay if previous is None else max(self.delay, previous + self.interval - time.monotonic())
        time.sleep(max(due, 0.0))
        with self.lock:
            event = self.waiting.pop(project)
            self.running.add(project)
            self.started[project] = time.monotonic()
        try:
            self.run(project, event)
        except Exception:  # one project's failure (Label Studio down, a model bug) must not stop the pool
            log.exception("project %s: training failed", project)
        finally:
            with self.lock:
                self.running.discard(project)
                follow_up = self.again.pop(project, None)
                if follow_up is not None:
                    self.waiting[project] = follow_up
        if follow_up is not None:
            self.pool.submit(self._job, project)
