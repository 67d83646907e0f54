"""Label Studio's ML backend protocol on Flask 3: /health, /setup, /predict, /webhook (+ /train, /versions).

One process holds one model per Label Studio project (in memory and in $ML_DATA_DIR/project-<id>.joblib).
Annotation webhooks schedule a training run in a background thread and return at once (Label Studio
waits at most WEBHOOK_TIMEOUT seconds); events arriving within ML_TRAIN_DELAY seconds, or while a run is
going, collapse into one run.

After each training the new model predicts every unlabeled task in one batch; the predictions are stored
in Label Studio and the project's model_version is set to the new version. Label Studio's uncertainty
sampling only looks at predictions of the project's model_version, so this is what makes
"lowest score first" follow the latest model.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import requests
from flask import Flask, Response, jsonify, request

from . import labelconfig
from .model import TextChoicesModel

log = logging.getLogger("labelstack_ml")
logging.basicConfig(level=os.environ.get("ML_LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(message)s")

DATA_DIR = Path(os.environ.get("ML_DATA_DIR", "/data"))
LS_URL = os.environ.get("LABEL_STUDIO_URL", "http://app:8000").rstrip("/")
LS_TOKEN = os.environ.get("LABEL_STUDIO_API_KEY", "")
AUTH_USER = os.environ.get("BASIC_AUTH_USER", "")
AUTH_PASS = os.environ.get("BASIC_AUTH_PASS", "")
MIN_ANNOTATIONS = int(os.environ.get("ML_MIN_ANNOTATIONS", "10"))
TRAIN_DELAY = float(os.environ.get("ML_TRAIN_DELAY", "2"))
PUBLISH_BATCH = 1000
MODEL_CLASS = TextChoicesModel
TRAIN_ACTIONS = {
    "ANNOTATION_CREATED",
    "ANNOTATION_UPDATED",
    "ANNOTATIONS_CREATED",
    "ANNOTATIONS_DELETED",
    "START_TRAINING",
}
UNTRAINED = "untrained"
Json = Any  # a value as json.loads returns it


@dataclass
class Trained:
    """A trained model of one project, as saved on disk."""

    model: Any
    version: str
    target: labelconfig.ChoicesTarget
    n_annotations: int
    seconds: float


class Registry:
    """The projects' models, their files and their training threads."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.lock = threading.Lock()
        self.models: dict[int, Trained] = {}
        self.pending: set[int] = set()
        self.running: set[int] = set()
        self.counter: dict[int, int] = {}
        for path in sorted(data_dir.glob("project-*.joblib")):
            try:
                trained = joblib.load(path)
                project = int(path.stem.split("-", 1)[1])
            except Exception:
                log.exception("cannot load %s, ignoring it", path)
                continue
            self.models[project] = trained
            self.counter[project] = int(re.match(r"v(\d+)", trained.version).group(1))
            log.info("project %s: loaded model %s", project, trained.version)

    def get(self, project: int) -> Trained | None:
        with self.lock:
            return self.models.get(project)

    def training(self) -> list[int]:
        """Projects with a training queued or running: empty once every annotation so far is learned."""
        with self.lock:
            return sorted(self.pending | self.running)

    def schedule(self, project: int) -> None:
        """Train `project` soon, in the background; one run at a time per project."""
        with self.lock:
            self.pending.add(project)
            if project in self.running:
                return
            self.running.add(project)
        threading.Thread(target=self._loop, args=(project,), name=f"train-{project}", daemon=True).start()

    def _loop(self, project: int) -> None:
        try:
            while True:
                time.sleep(TRAIN_DELAY)
                with self.lock:
                    if project not in self.pending:
                        self.running.discard(project)
                        return
                    self.pending.discard(project)
                try:
                    self.train(project)
                except Exception:
                    log.exception("project %s: training failed", project)
        finally:
            with self.lock:
                self.running.discard(project)

    def train(self, project: int) -> None:
        started = time.monotonic()
        data = fetch_project_data(project)
        if data is None:
            log.info("project %s: no <Choices> bound to a <Text>: nothing to train", project)
            return
        target, texts, labels = data.target, data.texts, data.labels
        if len(texts) < MIN_ANNOTATIONS or len(set(labels)) < 2:
            log.info("project %s: %d annotations, %d labels: not enough yet", project, len(texts), len(set(labels)))
            return
        model = MODEL_CLASS()
        model.fit(texts, labels)
        with self.lock:
            number = self.counter.get(project, 0) + 1
            self.counter[project] = number
        version = f"v{number}-{time.strftime('%Y%m%d%H%M%S', time.gmtime())}"
        trained = Trained(model, version, target, len(texts), round(time.monotonic() - started, 3))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        path = self.data_dir / f"project-{project}.joblib"
        tmp = path.with_suffix(".tmp")
        joblib.dump(trained, tmp)
        tmp.replace(path)
        with self.lock:
            self.models[project] = trained
        log.info("project %s: trained %s on %d annotations in %.2fs", project, version, len(texts), trained.seconds)
        publish_predictions(project, trained, data.unlabeled)


def prediction(trained: Trained, proba: dict[str, float] | None) -> dict[str, Any]:
    """One prediction in Label Studio's format: the most likely choice, its probability as the score."""
    if not proba:
        return {"result": [], "score": 0.0, "model_version": trained.version}
    label, score = max(proba.items(), key=lambda kv: kv[1])
    target = trained.target
    result = {
        "from_name": target.from_name,
        "to_name": target.to_name,
        "type": "choices",
        "value": {"choices": [label]},
        "score": score,
    }
    return {"result": [result], "score": score, "model_version": trained.version}


def publish_predictions(project: int, trained: Trained, unlabeled: list[tuple[int, str]]) -> None:
    """Store the new model's predictions of the unlabeled tasks, then make it the project's model_version."""
    started = time.monotonic()
    for start in range(0, len(unlabeled), PUBLISH_BATCH):
        batch = unlabeled[start : start + PUBLISH_BATCH]
        probas = trained.model.predict_proba([text for _, text in batch])
        rows = [dict(prediction(trained, proba), task=task) for (task, _), proba in zip(batch, probas, strict=True)]
        ls_call("POST", f"/api/projects/{project}/import/predictions", rows)
    # Label Studio refuses a model_version that no prediction carries, hence after the import.
    if unlabeled:
        ls_call("PATCH", f"/api/projects/{project}", {"model_version": trained.version})
    log.info(
        "project %s: stored %d predictions of %s in %.2fs",
        project,
        len(unlabeled),
        trained.version,
        time.monotonic() - started,
    )


def ls_call(method: str, path: str, body: Json = None, **params: str) -> Json:
    response = requests.request(
        method,
        f"{LS_URL}{path}",
        params=params,
        json=body,
        headers={"Authorization": f"Token {LS_TOKEN}"},
        timeout=300,
    )
    response.raise_for_status()
    return response.json() if response.content else None


@dataclass
class ProjectData:
    target: labelconfig.ChoicesTarget
    texts: list[str]  # labeled texts ...
    labels: list[str]  # ... and their labels
    unlabeled: list[tuple[int, str]]  # (task id, text) of tasks without an annotation


def fetch_project_data(project: int) -> ProjectData | None:
    """The project's texts from one export (latest non-cancelled annotation per task); None without a target."""
    target = labelconfig.parse(ls_call("GET", f"/api/projects/{project}")["label_config"])
    if target is None:
        return None
    data = ProjectData(target, [], [], [])
    for task in ls_call("GET", f"/api/projects/{project}/export", exportType="JSON", download_all_tasks="true"):
        text = (task.get("data") or {}).get(target.data_key)
        if not isinstance(text, str):
            continue
        annotations = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
        if not annotations:
            data.unlabeled.append((task["id"], text))
            continue
        latest = max(annotations, key=lambda a: a.get("id", 0))
        choices = [
            c
            for r in latest.get("result") or []
            if r.get("from_name") == target.from_name
            for c in (r.get("value") or {}).get("choices") or []
        ]
        if choices:
            data.texts.append(text)
            data.labels.append(choices[0])
    return data


def project_id(value: Json) -> int | None:
    """Label Studio sends "<id>.<timestamp>" to /setup and /predict and {"id": …} to /webhook."""
    if isinstance(value, dict):
        value = value.get("id")
    try:
        return int(str(value).split(".", 1)[0])
    except ValueError:
        return None


app = Flask(__name__)
registry = Registry(DATA_DIR)


@app.before_request
def require_basic_auth() -> Response | None:
    if request.path == "/health" or not AUTH_PASS:
        return None
    auth = request.authorization
    if (
        auth is None
        or not hmac.compare_digest((auth.username or "").encode(), AUTH_USER.encode())
        or not hmac.compare_digest((auth.password or "").encode(), AUTH_PASS.encode())
    ):
        return Response("authentication required\n", 401, {"WWW-Authenticate": 'Basic realm="ml-backend"'})
    return None


@app.get("/health")
@app.get("/")
def health() -> Response:
    return jsonify({"status": "UP", "model_class": MODEL_CLASS.__name__, "training": registry.training()})


@app.post("/setup")
def setup() -> Response:
    body = request.get_json(silent=True) or {}
    trained = registry.get(project_id(body.get("project")) or -1)
    return jsonify({"model_version": trained.version if trained else UNTRAINED})


@app.get("/versions")
def versions() -> Response:
    trained = registry.get(project_id(request.args.get("project")) or -1)
    return jsonify({"versions": [trained.version] if trained else []})


@app.post("/predict")
def predict() -> Response:
    body = request.get_json(silent=True) or {}
    tasks = body.get("tasks") or []
    trained = registry.get(project_id(body.get("project")) or -1)
    if trained is None or not isinstance(tasks, list):
        # Not trained yet: no prediction at all, so Label Studio asks again once a model exists.
        return jsonify({"results": []})
    key = trained.target.data_key
    texts = [((t or {}).get("data") or {}).get(key) if isinstance(t, dict) else None for t in tasks]
    valid = [i for i, text in enumerate(texts) if isinstance(text, str)]
    probas = trained.model.predict_proba([texts[i] for i in valid]) if valid else []
    by_index = dict(zip(valid, probas, strict=True))
    # A task without the text field gets an empty result (and score 0), never an error.
    return jsonify({"results": [prediction(trained, by_index.get(i)) for i in range(len(tasks))]})


@app.post("/webhook")
@app.post("/train")
def webhook() -> tuple[Response, int]:
    body = request.get_json(silent=True) or {}
    action = body.get("action") or ("START_TRAINING" if request.path == "/train" else "")
    project = project_id(body.get("project"))
    if action in TRAIN_ACTIONS and project is not None:
        registry.schedule(project)
        return jsonify({"status": "training scheduled", "project": project}), 201
    return jsonify({"status": "ignored", "action": action}), 201


@app.errorhandler(Exception)
def on_error(exc: Exception) -> tuple[Response, int]:
    code = getattr(exc, "code", 500)
    if not isinstance(code, int):
        code = 500
    if code >= 500:
        log.exception("request failed")
    return jsonify({"error": str(exc) if code < 500 else "internal error"}), code
