"""The backend's own metrics in Prometheus' text format (GET /metrics, basic auth like every route).

Written by hand: the server is one process (gunicorn --workers 1), so counters in memory are the truth, and
prometheus_client is in neither the image's nor the tooling's pins.
"""

from __future__ import annotations

import calendar
import re
import threading
import time
from collections.abc import Iterable, Mapping

# Upper bounds (seconds) of the /predict latency histogram; +Inf is implied.
PREDICT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# The built-in versions, v<N>-<UTC time> (base.next_version): the time is when the model was trained.
VERSION_TIME = re.compile(r"v\d+-(\d{14})$")


def version_timestamp(version: str | None) -> float | None:
    """Unix time a v<N>-<UTC time> version was made; None for versions of another form."""
    match = VERSION_TIME.match(version or "")
    return float(calendar.timegm(time.strptime(match.group(1), "%Y%m%d%H%M%S"))) if match else None


class Metrics:
    """Training runs per project and /predict latency, thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.trainings: dict[int, int] = {}
        self.failures: dict[int, int] = {}
        self.train_seconds: dict[int, float] = {}
        self.last_success: dict[int, float] = {}
        self.last_failed: dict[int, int] = {}
        self.predict_buckets = [0] * len(PREDICT_BUCKETS)
        self.predict_count = 0
        self.predict_seconds = 0.0

    def training(self, project: int, seconds: float, *, ok: bool) -> None:
        with self.lock:
            self.trainings[project] = self.trainings.get(project, 0) + 1
            self.train_seconds[project] = self.train_seconds.get(project, 0.0) + seconds
            self.failures.setdefault(project, 0)
            self.last_failed[project] = 0 if ok else 1
            if ok:
                self.last_success[project] = time.time()
            else:
                self.failures[project] += 1

    def predicted(self, seconds: float) -> None:
        with self.lock:
            for i, bound in enumerate(PREDICT_BUCKETS):
                if seconds <= bound:
                    self.predict_buckets[i] += 1
            self.predict_count += 1
            self.predict_seconds += seconds

    def render(self, pending: int, versions: Mapping[int, str]) -> str:
        """Everything, plus the training queue's length and each project's model version time (read now)."""
        stamps = {p: t for p, v in versions.items() if (t := version_timestamp(v)) is not None}
        with self.lock:
            lines = [
                *family("trainings_total", "counter", "Training runs finished, failed ones included.", self.trainings),
                *family("training_failures_total", "counter", "Training runs that raised.", self.failures),
                *family("training_seconds_total", "counter", "Seconds spent in training runs.", self.train_seconds),
                *family("training_last_failed", "gauge", "1 when the project's latest run failed.", self.last_failed),
                *family(
                    "last_training_success_timestamp_seconds", "gauge", "End of the latest good run.", self.last_success
                ),
                *family("model_version_timestamp_seconds", "gauge", "When the current model was trained.", stamps),
                "# HELP labelstack_ml_training_pending Projects with a training run waiting or going.",
                "# TYPE labelstack_ml_training_pending gauge",
                f"labelstack_ml_training_pending {pending}",
                "# HELP labelstack_ml_predict_seconds Time /predict took.",
                "# TYPE labelstack_ml_predict_seconds histogram",
            ]
            lines += [
                f'labelstack_ml_predict_seconds_bucket{{le="{bound}"}} {n}'
                for bound, n in zip(PREDICT_BUCKETS, self.predict_buckets, strict=True)
            ]
            lines += [
                f'labelstack_ml_predict_seconds_bucket{{le="+Inf"}} {self.predict_count}',
                f"labelstack_ml_predict_seconds_sum {self.predict_seconds}",
                f"labelstack_ml_predict_seconds_count {self.predict_count}",
            ]
        return "\n".join(lines) + "\n"


def family(name: str, kind: str, help_text: str, values: Mapping[int, float]) -> Iterable[str]:
    """One metric family labelled by project."""
    yield f"# HELP labelstack_ml_{name} {help_text}"
    yield f"# TYPE labelstack_ml_{name} {kind}"
    for project, value in sorted(values.items()):
        yield f'labelstack_ml_{name}{{project="{project}"}} {value}'
