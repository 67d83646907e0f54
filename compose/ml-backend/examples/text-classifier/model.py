"""The integration guide's TextClassifierBackend, with a small scikit-learn model in place of transformers.pipeline.

The class keeps the guide's shape on purpose (`from label_studio_ml import …`, __init__(**kwargs),
predict(tasks, **kwargs) returning [{"result", "score"}], fit(annotations, **kwargs)): labelstack serves such
a class unmodified. fit follows the 1.0.9 contract: it returns a train_output, which the next instance reads.
"""

from __future__ import annotations

import os
from typing import Any

import joblib
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline

from label_studio_ml import LabelStudioMLBase

# What the pretrained pipeline knew before any annotation: enough to give every task a first guess.
SEED = [
    ("I love it, a great product and works perfectly", "Positive"),
    ("excellent service, very happy, would recommend", "Positive"),
    ("terrible quality, broke after a day, waste of money", "Negative"),
    ("awful support, very disappointed, do not buy", "Negative"),
    ("the parcel arrived on tuesday in a box", "Neutral"),
    ("it is a blue shirt with two pockets", "Neutral"),
]


class TextPipeline:
    """Called like a transformers text-classification pipeline: text -> [{"label", "score"}]."""

    def __init__(self, model: Pipeline) -> None:
        self.model = model

    def __call__(self, text: str) -> list[dict[str, Any]]:
        proba = self.model.predict_proba([text])[0]
        best = int(proba.argmax())
        return [{"label": str(self.model.classes_[best]), "score": float(proba[best])}]


def pipeline(task: str, model_path: str | None = None) -> TextPipeline:
    """The model saved by fit when there is one, else one trained on SEED."""
    if task != "text-classification":
        raise ValueError(f"only text-classification is available, not {task!r}")
    if model_path and os.path.isfile(model_path):
        return TextPipeline(joblib.load(model_path))
    return TextPipeline(train([text for text, _ in SEED], [label for _, label in SEED]))


def train(texts: list[str], labels: list[str]) -> Pipeline:
    model = make_pipeline(TfidfVectorizer(sublinear_tf=True), LogisticRegression(max_iter=1000, C=10.0))
    model.fit(texts, labels)
    return model


class TextClassifierBackend(LabelStudioMLBase):
    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.classifier = pipeline("text-classification", model_path=self.train_output.get("model_path"))

    def predict(self, tasks: list[dict[str, Any]], **kwargs: object) -> list[dict[str, Any]]:
        predictions = []
        for task in tasks:
            text = task["data"]["text"]
            result = self.classifier(text)[0]

            predictions.append(
                {
                    "result": [
                        {
                            "from_name": "sentiment",
                            "to_name": "text",
                            "type": "choices",
                            "value": {"choices": [result["label"]]},
                        }
                    ],
                    "score": result["score"],
                }
            )

        return predictions

    def fit(self, annotations: list[dict[str, Any]], **kwargs: object) -> dict[str, Any]:
        # Train on the seed plus every annotated task; labelstack passes all of them and a workdir per project.
        texts = [text for text, _ in SEED]
        labels = [label for _, label in SEED]
        for task in annotations:
            for annotation in task.get("annotations") or []:
                for region in annotation.get("result") or []:
                    if region.get("from_name") == "sentiment" and not annotation.get("was_cancelled"):
                        texts.append(task["data"]["text"])
                        labels.append(region["value"]["choices"][0])
        if len(texts) == len(SEED):
            return {}  # nothing new: no new model, no new version
        path = os.path.join(kwargs["workdir"], "model.joblib")
        joblib.dump(train(texts, labels), path)
        return {"model_path": path, "annotations": len(texts) - len(SEED)}
