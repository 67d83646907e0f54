"""labelstack's built-in text classifier for any <Choices> bound to a <Text>, and what the built-in models share.

TextClassifier is an ordinary LabelStudioMLBase subclass (the default ML_MODEL_CLASS); TextChoicesModel is the
scikit-learn part it trains. A class of your own replaces both (see examples/ and byo.Dockerfile).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline

from . import labelconfig
from .base import Json, LabelStudioMLBase, next_version

log = logging.getLogger("labelstack_ml")
MIN_ANNOTATIONS = int(os.environ.get("ML_MIN_ANNOTATIONS", "10"))


class TextChoicesModel:
    """Text classifier: TF-IDF of words + logistic regression (bigrams did not help on short texts: 0.90 vs 0.93).

    fit(texts, labels) trains from scratch; predict_proba(texts) returns, per text, {label: probability}.
    Instances are saved with joblib, so everything they hold must pickle.
    """

    def __init__(self) -> None:
        self.pipeline: Pipeline | None = None

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> None:
        pipeline = make_pipeline(
            TfidfVectorizer(sublinear_tf=True),
            LogisticRegression(max_iter=1000, C=10.0),
        )
        pipeline.fit(list(texts), list(labels))
        self.pipeline = pipeline

    def predict_proba(self, texts: Sequence[str]) -> list[dict[str, float]]:
        if self.pipeline is None:
            raise RuntimeError("model is not trained")
        classes = [str(c) for c in self.pipeline.classes_]
        return [dict(zip(classes, (float(p) for p in row), strict=True)) for row in self.pipeline.predict_proba(texts)]


@dataclass
class Trained:
    """A trained model of one project, as saved in <ML_DATA_DIR>/project-<id>.joblib."""

    model: Any
    version: str
    target: labelconfig.ChoicesTarget
    n_annotations: int
    seconds: float


def latest_results(task: dict[str, Json], from_name: str) -> list[dict[str, Json]] | None:
    """The results of `from_name` in the task's latest non-cancelled annotation; None when it has none."""
    annotations = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    if not annotations:
        return None
    latest = max(annotations, key=lambda a: a.get("id", 0))
    return [r for r in latest.get("result") or [] if r.get("from_name") == from_name]


def examples(tasks: list[dict[str, Json]], target: labelconfig.ChoicesTarget) -> tuple[list[str], list[str]]:
    """(texts, labels): per task its text and the first choice of its latest non-cancelled annotation."""
    texts, labels = [], []
    for task in tasks:
        text = (task.get("data") or {}).get(target.data_key)
        results = latest_results(task, target.from_name)
        if not isinstance(text, str) or not results:
            continue
        choices = [c for r in results for c in (r.get("value") or {}).get("choices") or []]
        if choices:
            texts.append(text)
            labels.append(choices[0])
    return texts, labels


def load_trained(path: Path, project_id: str) -> Trained | None:
    """The model saved at `path`; None when there is none, or when it cannot be read (logged: the next event
    trains again rather than every request failing).
    """
    if not path.is_file():
        return None
    try:
        trained = joblib.load(path)
    except Exception:
        log.exception("project %s: cannot load %s, ignoring it", project_id, path)
        return None
    return trained if isinstance(trained, Trained) else None


def save_trained(trained: Trained, path: Path) -> None:
    """Write atomically: a crash mid-write leaves the previous model, never half a file."""
    tmp = path.with_suffix(".tmp")
    joblib.dump(trained, tmp)
    tmp.replace(path)


class TextClassifier(LabelStudioMLBase):
    """Learns from scratch on every fit once ML_MIN_ANNOTATIONS tasks carry at least two labels.

    Versions are v<N>-<UTC time>; "untrained" until the first model. The model file survives restarts.
    """

    INITIAL_MODEL_VERSION = "untrained"

    def setup(self) -> None:
        self.trained = load_trained(self.path(), self.project_id)
        if self.trained is not None:
            # The file is the truth (a model saved before this project's version was cached, or a crash in between).
            self.model_version = self.trained.version

    def path(self) -> Path:
        return self.model_dir / f"project-{self.project_id}.joblib"

    def predict(self, tasks: list[dict[str, Json]], context: Json = None, **kwargs: Json) -> list[Json]:
        trained = self.trained
        if trained is None:
            # Not trained yet: no prediction at all, so Label Studio asks again once a model exists.
            return []
        texts = [(task.get("data") or {}).get(trained.target.data_key) for task in tasks]
        valid = [i for i, text in enumerate(texts) if isinstance(text, str)]
        probas = trained.model.predict_proba([texts[i] for i in valid]) if valid else []
        by_index = dict(zip(valid, probas, strict=True))
        # A task without the text field gets an empty result (and score 0), never an error.
        return [prediction(trained, by_index.get(i)) for i in range(len(tasks))]

    def fit(self, event: str, data: dict[str, Json], **kwargs: Json) -> Json:
        started = time.monotonic()
        target = labelconfig.parse(self.label_config or "")
        if target is None:
            log.info("project %s: no <Choices> bound to a <Text>: nothing to train", self.project_id)
            return None
        texts, labels = examples(data["tasks"], target)
        if len(texts) < MIN_ANNOTATIONS or len(set(labels)) < 2:
            log.info(
                "project %s: %d annotations, %d labels: not enough yet", self.project_id, len(texts), len(set(labels))
            )
            return None
        model = TextChoicesModel()
        model.fit(texts, labels)
        version = next_version(self.model_version)
        trained = Trained(model, version, target, len(texts), round(time.monotonic() - started, 3))
        save_trained(trained, self.path())
        self.trained = trained
        self.model_version = version
        log.info(
            "project %s: trained %s on %d annotations in %.2fs", self.project_id, version, len(texts), trained.seconds
        )
        return {"model_version": version, "annotations": len(texts), "seconds": trained.seconds}


def prediction(trained: Trained, proba: dict[str, float] | None) -> dict[str, Json]:
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
