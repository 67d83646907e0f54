"""A LabelStudioMLBase compatible with Label Studio's documented ML backend API, old and current shapes.

The maintained label-studio-ml library is not on PyPI (only the obsolete 1.0.9 is), so model classes written
for it import this class through the `label_studio_ml` shim package next to this one. Written from the
protocol, not copied: the state a class keeps with get/set lives in one SQLite file shared by all projects.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from . import labelconfig

Json = Any  # a value as json.loads returns it


class KeyValueStore:
    """(project, key) -> JSON value, in SQLite: survives restarts, safe across the server's threads.

    The connection is opened per process: gunicorn --preload builds the app before forking its worker, and an
    SQLite connection must not cross a fork.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.pid = -1
        self.conn: sqlite3.Connection | None = None

    def _db(self) -> sqlite3.Connection:
        if self.conn is None or self.pid != os.getpid():
            self.conn = sqlite3.connect(self.path, check_same_thread=False)
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS kv (project TEXT, key TEXT, value TEXT, PRIMARY KEY (project, key))"
            )
            self.pid = os.getpid()
        return self.conn

    def get(self, project: str, key: str) -> Json:
        with self.lock:
            row = self._db().execute("SELECT value FROM kv WHERE project = ? AND key = ?", (project, key)).fetchone()
        return None if row is None else json.loads(row[0])

    def set(self, project: str, key: str, value: Json) -> None:
        with self.lock:
            db = self._db()
            db.execute("REPLACE INTO kv VALUES (?, ?, ?)", (project, key, json.dumps(value)))
            db.commit()

    def has(self, project: str, key: str) -> bool:
        return self.get(project, key) is not None


@dataclass
class ModelResponse:
    """What predict() may return instead of a list: the predictions, and the version that made them."""

    predictions: list[Json] = field(default_factory=list)
    model_version: str | None = None


def next_version(current: str | None) -> str:
    """v<N+1>-<UTC time> after v<N>-…; v1-<UTC time> after any other version (e.g. the initial 0.0.1)."""
    match = re.match(r"v(\d+)-", current or "")
    number = int(match.group(1)) + 1 if match else 1
    return f"v{number}-{time.strftime('%Y%m%d%H%M%S', time.gmtime())}"


class LabelStudioMLBase:
    """Base of a model class: one instance per Label Studio project, built by the server.

    Override setup() (called at the end of __init__), predict(tasks, context=None, **kwargs) and
    fit(event, data, **kwargs). Old-style signatures (predict(tasks, **kwargs), fit(annotations, **kwargs),
    fit(completions, workdir=None, **kwargs), __init__(self, **kwargs)) work too: see calls.py.
    """

    INITIAL_MODEL_VERSION: ClassVar[str] = "0.0.1"
    # The server replaces both with ML_DATA_DIR and a file in it; a class used on its own (tests) keeps these.
    store: ClassVar[KeyValueStore] = KeyValueStore(":memory:")
    model_dir: ClassVar[Path] = Path()

    def __init__(
        self,
        project_id: str | None = None,
        label_config: str | None = None,
        train_output: dict[str, Json] | None = None,
        **kwargs: Json,
    ) -> None:
        self.project_id = "" if project_id is None else str(project_id)
        # 1.0.9 classes fetch data with these; they are the backend's own URL and token, not the project creator's.
        self.hostname = os.environ.get("LABEL_STUDIO_URL", "")
        self.access_token = os.environ.get("LABEL_STUDIO_API_KEY", "")
        if label_config is not None:
            self.use_label_config(label_config)
        self.train_output: dict[str, Json] = (
            train_output if train_output is not None else self.get("train_output") or {}
        )
        if not self.has("model_version"):
            self.set("model_version", self.INITIAL_MODEL_VERSION)
        self.setup()

    def setup(self) -> None:
        """Called once per instance, after the label config and the cached state are in place."""

    def predict(self, tasks: list[dict[str, Json]], context: Json = None, **kwargs: Json) -> list[Json] | ModelResponse:
        """One prediction (a dict with "result", optionally "score" and "model_version") per task."""
        return []

    def fit(self, event: str, data: dict[str, Json], **kwargs: Json) -> Json:
        """Learn; `event` is the Label Studio action, `data` holds "project" and its annotated "tasks"."""
        return None

    def get(self, key: str) -> Json:
        return self.store.get(self.project_id, key)

    def set(self, key: str, value: Json) -> None:
        self.store.set(self.project_id, key, value)

    def has(self, key: str) -> bool:
        return self.store.has(self.project_id, key)

    def use_label_config(self, label_config: str) -> None:
        if self.get("label_config") != label_config:
            self.set("label_config", label_config)
            self.set("parsed_label_config", labelconfig.parse_config(label_config))

    @property
    def label_config(self) -> str | None:
        return self.get("label_config")

    @label_config.setter
    def label_config(self, value: str) -> None:
        self.use_label_config(value)

    @property
    def parsed_label_config(self) -> dict[str, Json]:
        return self.get("parsed_label_config") or {}

    @parsed_label_config.setter
    def parsed_label_config(self, value: dict[str, Json]) -> None:
        self.set("parsed_label_config", value)

    @property
    def extra_params(self) -> dict[str, Json]:
        return self.get("extra_params") or {}

    def set_extra_params(self, extra_params: dict[str, Json]) -> None:
        self.set("extra_params", extra_params)

    @property
    def model_version(self) -> str:
        return str(self.get("model_version"))

    @model_version.setter
    def model_version(self, value: str) -> None:
        self.set("model_version", str(value))

    def bump_model_version(self) -> str:
        self.model_version = next_version(self.model_version)
        return self.model_version
