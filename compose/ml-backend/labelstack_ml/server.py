"""Label Studio's ML backend protocol on Flask 3 around any LabelStudioMLBase class (ML_MODEL_CLASS).

Routes, as Label Studio 1.23.2 calls them: GET /health and / (status), POST /setup (answers the model version),
POST /predict, POST /train ("Start Training": every annotated task in the body), POST /webhook (events),
GET /versions, and GET /metrics (Prometheus' text format: metrics.py). All but /health and /webhook need basic auth.

Trust: Label Studio creates the /webhook hook itself without credentials, so a webhook event is only a hint.
It schedules a run for a project the backend was set up for (an authenticated /setup, /predict or /train
recorded its label config); the run reads everything from Label Studio with the backend's own token; nothing
in a request body is ever training data. Runs coalesce per project and are rate-limited (trainer.py).

After a run that changed the model version, the new model predicts every unlabeled task; the predictions are
stored in Label Studio, the project's model_version follows (Label Studio's uncertainty sampling only ranks
predictions of that version), and the project's predictions of older versions from this backend are deleted.
"""

from __future__ import annotations

import hmac
import importlib
import inspect
import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from flask import Flask, Response, abort, jsonify, request
from werkzeug.exceptions import HTTPException

from . import calls
from .base import Json, KeyValueStore, LabelStudioMLBase
from .lsapi import LabelStudio
from .metrics import Metrics
from .model import Trained  # noqa: F401 - model files saved before 2026-12 pickled it as labelstack_ml.server.Trained
from .trainer import Trainer

log = logging.getLogger("labelstack_ml")

DEFAULT_MODEL_CLASS = "labelstack_ml.builtin:BuiltinModels"
TRAIN_ACTIONS = {
    "ANNOTATION_CREATED",
    "ANNOTATION_UPDATED",
    "ANNOTATIONS_CREATED",
    "ANNOTATIONS_DELETED",
    "START_TRAINING",
}
PUBLISH_BATCH = 1000  # tasks per /predict call and per prediction import while publishing
VERSIONS_KEY = "labelstack_versions"  # per project: the versions whose predictions this backend may prune
UID = re.compile(r"(\d+)(?:\.\d+)?")  # "<id>.<created timestamp>" as Label Studio sends it, or a bare id


class ConfigError(ValueError):
    """A setting the server cannot start with; the message names the variable and its value."""


@dataclass(frozen=True)
class Settings:
    auth_user: str
    auth_pass: str
    model_class: type[LabelStudioMLBase]
    data_dir: Path = Path("/data")
    ls_url: str = "http://app:8000"
    ls_token: str = ""
    max_request_bytes: int = 32 * 1024 * 1024
    train_workers: int = 2
    train_max_pending: int = 100
    train_delay: float = 2.0
    train_interval: float = 5.0

    @classmethod
    def from_env(cls, env: Mapping[str, str], model_class: type[LabelStudioMLBase] | None = None) -> Settings:
        for name in ("BASIC_AUTH_USER", "BASIC_AUTH_PASS"):
            if not env.get(name):
                raise ConfigError(f"{name} is empty: the backend does not run without basic auth")
        return cls(
            auth_user=env["BASIC_AUTH_USER"],
            auth_pass=env["BASIC_AUTH_PASS"],
            model_class=model_class or load_model_class(env.get("ML_MODEL_CLASS") or DEFAULT_MODEL_CLASS),
            data_dir=Path(env.get("ML_DATA_DIR") or "/data"),
            ls_url=env.get("LABEL_STUDIO_URL") or "http://app:8000",
            ls_token=env.get("LABEL_STUDIO_API_KEY", ""),
            max_request_bytes=int(_number(env, "ML_MAX_REQUEST_BYTES", "33554432", minimum=1024)),
            train_workers=int(_number(env, "ML_TRAIN_WORKERS", "2", minimum=1)),
            train_max_pending=int(_number(env, "ML_TRAIN_MAX_PENDING", "100", minimum=1)),
            train_delay=_number(env, "ML_TRAIN_DELAY", "2", minimum=0),
            train_interval=_number(env, "ML_TRAIN_MIN_INTERVAL", "5", minimum=0),
        )


def _number(env: Mapping[str, str], name: str, default: str, minimum: float) -> float:
    raw = env.get(name) or default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum:g}, got {raw!r}")
    return value


def load_model_class(spec: str) -> type[LabelStudioMLBase]:
    """`module:Class`, or `module` alone when it defines exactly one LabelStudioMLBase subclass."""
    module_name, _, class_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"ML_MODEL_CLASS={spec!r}: cannot import {module_name!r}: {exc}") from None
    if class_name:
        candidates = [getattr(module, class_name, None)]
    else:
        candidates = [c for _, c in inspect.getmembers(module, inspect.isclass) if c.__module__ == module.__name__]
    found = [c for c in candidates if isinstance(c, type) and issubclass(c, LabelStudioMLBase)]
    if len(found) != 1:
        raise ConfigError(f"ML_MODEL_CLASS={spec!r} names {len(found)} LabelStudioMLBase subclasses, not one")
    return found[0]


def settings_or_exit(model_class: type[LabelStudioMLBase] | None = None) -> Settings:
    try:
        return Settings.from_env(os.environ, model_class)
    except ConfigError as exc:
        sys.exit(f"FAIL: {exc}")


class Projects:
    """The model instance of each project the backend was set up for (one per project, built on first use)."""

    def __init__(self, model_class: type[LabelStudioMLBase], store: KeyValueStore) -> None:
        self.model_class = model_class
        self.store = store
        self.lock = threading.Lock()
        self.instances: dict[int, LabelStudioMLBase] = {}

    def known(self, project: int) -> bool:
        """Set up through an authenticated call, now or before a restart."""
        return self.store.has(str(project), "label_config")

    def model(self, project: int, label_config: str | None = None, *, rebuild: bool = False) -> LabelStudioMLBase:
        """The project's instance; a new one for a changed label config (or when asked: after fit's train_output)."""
        with self.lock:
            model = self.instances.get(project)
            if model is None or rebuild or (label_config is not None and label_config != model.label_config):
                uid = str(project)
                model = calls.construct(
                    self.model_class,
                    project_id=uid,
                    label_config=label_config if label_config is not None else self.store.get(uid, "label_config"),
                    train_output=self.store.get(uid, "train_output"),
                )
                self.instances[project] = model
            return model


def create_app(settings: Settings) -> Flask:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    LabelStudioMLBase.store = KeyValueStore(str(settings.data_dir / "cache.db"))
    LabelStudioMLBase.model_dir = settings.data_dir
    projects = Projects(settings.model_class, LabelStudioMLBase.store)
    studio = LabelStudio(settings.ls_url, settings.ls_token)
    metrics = Metrics()

    def train(project: int, event: str) -> None:
        """One run, measured: the trainer logs a failure, the metrics count it."""
        start = time.monotonic()
        try:
            run(project, event)
        except Exception:
            metrics.training(project, time.monotonic() - start, ok=False)
            raise
        metrics.training(project, time.monotonic() - start, ok=True)

    def run(project: int, event: str) -> None:
        info = studio.project(project)
        tasks = studio.tasks(project)
        model = projects.model(project, info["label_config"])
        before = model.model_version
        workdir = settings.data_dir / "workdir" / str(project)
        workdir.mkdir(parents=True, exist_ok=True)
        # Label Studio's /train sends the tasks that have any annotation (cancelled ones too): the same here.
        annotated = [t for t in tasks if t.get("annotations")]
        result = calls.fit(model, event, {"project": info, "tasks": annotated}, str(workdir))
        if isinstance(result, dict) and result and not calls.is_event_fit(model):
            # 1.0.9 contract: what fit returns is the next model's train_output; a new model, a new version.
            model.set("train_output", calls.plain(result))
            model.bump_model_version()
            model = projects.model(project, rebuild=True)
        if model.model_version != before:
            unlabeled = [t for t in tasks if all(a.get("was_cancelled") for a in t.get("annotations") or [])]
            publish(project, model, unlabeled)

    def publish(project: int, model: LabelStudioMLBase, unlabeled: list[dict[str, Json]]) -> None:
        version = model.model_version
        stored = 0
        for start in range(0, len(unlabeled), PUBLISH_BATCH):
            batch = unlabeled[start : start + PUBLISH_BATCH]
            rows = [
                {**p, "task": task["id"]}
                for task, predictions in zip(batch, calls.predict(model, batch, context=None), strict=False)
                for p in (predictions if isinstance(predictions, list) else [predictions])
                if isinstance(p, dict) and p.get("result")
            ]
            if rows:
                studio.import_predictions(project, rows)
                stored += len(rows)
        ours = remember_version(model)
        if stored:
            # Label Studio refuses a model_version that no prediction carries, hence after the import.
            studio.set_model_version(project, version)
        superseded = [v for v in studio.prediction_versions(project) if v != version and v in ours]
        for old in superseded:
            studio.delete_predictions(project, old)
        model.set(VERSIONS_KEY, [version])  # every older one is gone from Label Studio
        log.info("project %s: stored %d predictions of %s, deleted those of %s", project, stored, version, superseded)

    trainer = Trainer(
        train,
        workers=settings.train_workers,
        max_pending=settings.train_max_pending,
        delay=settings.train_delay,
        interval=settings.train_interval,
    )

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes

    def authenticated() -> bool:
        auth = request.authorization
        return (
            auth is not None
            and hmac.compare_digest((auth.username or "").encode(), settings.auth_user.encode())
            and hmac.compare_digest((auth.password or "").encode(), settings.auth_pass.encode())
        )

    @app.before_request
    def require_basic_auth() -> Response | None:
        # Label Studio's health probe carries no credentials before a backend is saved; its webhooks never do.
        if request.path in ("/health", "/webhook") or authenticated():
            return None
        return Response("authentication required\n", 401, {"WWW-Authenticate": 'Basic realm="ml-backend"'})

    @app.get("/health")
    @app.get("/")
    def health() -> Response:
        return jsonify({"status": "UP", "model_class": settings.model_class.__name__, "training": trainer.busy()})

    @app.get("/metrics")
    def metrics_text() -> Response:
        with projects.lock:
            versions = {project: model.model_version for project, model in projects.instances.items()}
        text = metrics.render(len(trainer.busy()), versions)
        return Response(text, 200, {"Content-Type": "text/plain; version=0.0.4"})

    @app.post("/setup")
    def setup() -> Response:
        body = json_object()
        project = project_id(body.get("project"))
        model = projects.model(project, field(body, "schema", str, "the label config (a string)"))
        if body.get("extra_params") is not None:
            model.set_extra_params(body["extra_params"])
        remember_version(model)
        return jsonify({"model_version": model.model_version})

    @app.get("/versions")
    def versions() -> Response:
        project = project_id(request.args.get("project"))
        if not projects.known(project):
            unknown(project)
        return jsonify({"versions": [projects.model(project).model_version]})

    @app.post("/predict")
    def predict() -> Response:
        body = json_object()
        project = project_id(body.get("project"))
        tasks = field(body, "tasks", list, "a list of tasks")
        for i, task in enumerate(tasks):
            if not isinstance(task, dict):
                bad(f"tasks[{i}]", task, "a task object")
        params = field(body, "params", dict, "an object", default={})
        model = known_model(project, body.get("label_config"))
        remember_version(model)
        start = time.monotonic()
        results = calls.predict(model, tasks, **params)
        metrics.predicted(time.monotonic() - start)
        return jsonify({"results": results})

    @app.post("/train")
    def start_training() -> tuple[Response, int]:
        body = json_object()
        project = project_id(body.get("project"))
        known_model(project, body.get("label_config"))
        # The annotations in the body are not used: the run reads the project itself, like every run.
        return scheduled(project, "START_TRAINING")

    @app.post("/webhook")
    def webhook() -> tuple[Response, int]:
        body = json_object()
        action = field(body, "action", str, "a Label Studio event name")
        if action not in TRAIN_ACTIONS:
            return jsonify({"status": "ignored", "action": action}), 200
        project = project_id(event_project(body))
        # A hook with our credentials (labelstack-ml adds one) vouches for its project like /setup does.
        if not projects.known(project) and not authenticated():
            unknown(project)
        return scheduled(project, action)

    def known_model(project: int, label_config: Json) -> LabelStudioMLBase:
        """The model of a project that is known or described in this authenticated request; 404 otherwise."""
        if isinstance(label_config, str):
            return projects.model(project, label_config)
        if not projects.known(project):
            unknown(project)
        return projects.model(project)

    def scheduled(project: int, event: str) -> tuple[Response, int]:
        if not trainer.schedule(project, event):
            abort(503, f"training queue full ({settings.train_max_pending} projects waiting, ML_TRAIN_MAX_PENDING)")
        return jsonify({"status": "training scheduled", "project": project}), 201

    @app.errorhandler(HTTPException)
    def on_http_error(exc: HTTPException) -> tuple[Response, int]:
        code = exc.code or 500
        message = exc.description
        if code == 413:
            message = f"request body larger than {settings.max_request_bytes} bytes (ML_MAX_REQUEST_BYTES)"
        return jsonify({"error": message}), code

    @app.errorhandler(Exception)
    def on_error(exc: Exception) -> tuple[Response, int]:
        log.exception("request failed")
        return jsonify({"error": f"internal error ({type(exc).__name__}), see the backend's log"}), 500

    return app


def json_object() -> dict[str, Json]:
    """The request body as a JSON object; 413 past MAX_CONTENT_LENGTH, 400 for anything else."""
    raw = request.get_data(cache=False)
    try:
        body = json.loads(raw)
    except ValueError as exc:
        abort(400, f"request body is not JSON: {exc}")
    if not isinstance(body, dict):
        bad("request body", body, "a JSON object")
    return body


def remember_version(model: LabelStudioMLBase) -> list[str]:
    """Record the model's current version among those this backend handed out for the project (Label Studio
    stores predictions under them, live ones too); pruning deletes only predictions of these versions.
    """
    versions = model.get(VERSIONS_KEY) or []
    if model.model_version not in versions:
        versions = [*versions, model.model_version]
        model.set(VERSIONS_KEY, versions)
    return versions


def field(body: dict[str, Json], name: str, kind: type, wanted: str, default: Json = None) -> Json:
    """body[name], which must be of `kind` (`default` when absent or null); 400 naming the value otherwise."""
    value = body.get(name)
    if value is None and default is not None:
        return default
    if not isinstance(value, kind):
        bad(name, value, wanted)
    return value


def project_id(value: Json) -> int:
    """Label Studio sends "<id>.<timestamp>" to /setup, /predict and /train and a project object to /webhook."""
    if isinstance(value, dict):
        value = value.get("id")
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = UID.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        bad("project", value, "a project id or '<id>.<timestamp>'")
    return int(match.group(1))


def event_project(body: dict[str, Json]) -> Json:
    """The project an event is about: "project" when sent, else that of the (first) annotation or task."""
    if body.get("project") is not None:
        return body["project"]
    for key in ("annotation", "task"):
        item = body.get(key)
        item = item[0] if isinstance(item, list) and item else item
        if isinstance(item, dict) and item.get("project") is not None:
            return item["project"]
    return None


def bad(name: str, value: Json, wanted: str) -> NoReturn:
    shown = json.dumps(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    abort(400, f"{name} must be {wanted}, got {shown}")


def unknown(project: int) -> NoReturn:
    abort(404, f"project {project} is unknown to this backend: connect it in Label Studio first (POST /setup)")


def serve(model_class: type[LabelStudioMLBase], host: str = "0.0.0.0", port: int = 9090, **kwargs: Json) -> None:  # noqa: S104 - a backend listens for Label Studio
    """Run `model_class` behind this server on Flask's development server (the integration guide's entry point)."""
    create_app(settings_or_exit(model_class)).run(host=host, port=port)
