"""labelstack's built-in image classifier for <Choices> bound to an <Image>: colour histograms and a HOG-style
gradient histogram computed with Pillow and numpy, and a logistic regression (scikit-learn).

ImageClassifier is an ordinary LabelStudioMLBase subclass (a worked example of a model that reads the task's
files); ImageChoicesModel is the part it trains. Images are read through Label Studio's own URLs (local-files
storage, uploads) with the backend's account, within byte and pixel limits; an image that cannot be read gives
that task an empty prediction and one log line, and is left out of training.
"""

from __future__ import annotations

import io
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import requests
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from . import labelconfig
from .base import Json, LabelStudioMLBase, next_version
from .lsapi import LabelStudio, TooLargeError
from .model import MIN_ANNOTATIONS, Trained, latest_results, load_trained, log, prediction, save_trained

MAX_BYTES = int(os.environ.get("ML_IMAGE_MAX_BYTES", str(20 * 1024 * 1024)))
MAX_PIXELS = int(os.environ.get("ML_IMAGE_MAX_PIXELS", "25000000"))
# Label Studio serves these paths to a logged-in account; anything else (another host) is never fetched.
STUDIO_PATHS = ("/data/local-files", "/data/upload/")
SIDE = 64  # images are compared at 64x64: enough for colour and coarse shape, ~1 ms of features each
CELLS = 2  # HOG: a 2x2 grid of cells (finer grids tie shape to position: 0.72 vs 0.96 on tests/ml's shapes)
ORIENTATIONS = 9

Features = np.ndarray


class ImageError(ValueError):
    """An image that cannot be used: the message says why (missing, too large, not an image, not ours)."""


def studio_path(url: str) -> str:
    """The path and query to ask Label Studio for: absolute URLs (built from the public host name) are read
    from the backend's own LABEL_STUDIO_URL, so the token never leaves the stack.
    """
    parts = urlsplit(url)
    if not parts.path.startswith(STUDIO_PATHS):
        raise ImageError("not a Label Studio local-files or upload URL")
    return parts.path + (f"?{parts.query}" if parts.query else "")


def decode(content: bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """The image as 64x64 RGB; the pixel limit is checked on the header, before anything is decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(content))
            if image.width * image.height > max_pixels:
                raise ImageError(f"{image.width}x{image.height} pixels, more than {max_pixels}")
            image.draft("RGB", (SIDE * 2, SIDE * 2))  # JPEG decodes at a reduced scale; other formats ignore it
            return image.convert("RGB").resize((SIDE, SIDE), Image.Resampling.BILINEAR)
    except ImageError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"not a readable image ({type(exc).__name__}: {exc})") from None


def features(image: Image.Image) -> Features:
    """Colour: hue histogram of the coloured pixels (12 bins, so an object's size does not change it) and their
    share, saturation and value histograms (4 bins each), a 4x4x4 RGB histogram.
    Shape: gradient orientations (9 unsigned bins, weighted by magnitude) over the whole image, which does not
    depend on where the object is, and per cell of a 2x2 grid, L2-normalised (HOG without blocks).
    """
    rgb = np.asarray(image, dtype=np.float32) / 255.0
    n = float(SIDE * SIDE)
    hsv = np.asarray(image.convert("HSV"), dtype=np.float32) / 255.0
    coloured = hsv[..., 1] > 0.25
    hue = np.histogram(hsv[..., 0][coloured], bins=12, range=(0, 1))[0] / max(int(coloured.sum()), 1)
    saturation = np.histogram(hsv[..., 1], bins=4, range=(0, 1))[0] / n
    value = np.histogram(hsv[..., 2], bins=4, range=(0, 1))[0] / n
    quantized = np.minimum((rgb * 4).astype(int), 3)
    joint = np.bincount((quantized[..., 0] * 16 + quantized[..., 1] * 4 + quantized[..., 2]).ravel(), minlength=64)

    gy, gx = np.gradient(rgb.mean(axis=2))
    magnitude = np.hypot(gx, gy)
    orientation = np.minimum((np.mod(np.arctan2(gy, gx), np.pi) / np.pi * ORIENTATIONS).astype(int), ORIENTATIONS - 1)
    overall = np.bincount(orientation.ravel(), weights=magnitude.ravel(), minlength=ORIENTATIONS)
    cell = SIDE // CELLS
    hog = []
    for row in range(CELLS):
        for col in range(CELLS):
            window = np.s_[row * cell : (row + 1) * cell, col * cell : (col + 1) * cell]
            hist = np.bincount(orientation[window].ravel(), weights=magnitude[window].ravel(), minlength=ORIENTATIONS)
            hog.append(hist / (np.linalg.norm(hist) + 1e-6))
    parts = [hue, [coloured.mean()], saturation, value, joint / n, overall / (overall.sum() + 1e-6), *hog]
    return np.concatenate(parts).astype(np.float32)


class ImageChoicesModel:
    """fit(features, labels) trains from scratch; predict_proba(features) returns, per image, {label: probability}."""

    def __init__(self) -> None:
        self.pipeline: Pipeline | None = None

    def fit(self, rows: Sequence[Features], labels: Sequence[str]) -> None:
        pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.5))
        pipeline.fit(np.stack(rows), list(labels))
        self.pipeline = pipeline

    def predict_proba(self, rows: Sequence[Features]) -> list[dict[str, float]]:
        if self.pipeline is None:
            raise RuntimeError("model is not trained")
        classes = [str(c) for c in self.pipeline.classes_]
        probas = self.pipeline.predict_proba(np.stack(rows))
        return [dict(zip(classes, (float(p) for p in row), strict=True)) for row in probas]


class ImageClassifier(LabelStudioMLBase):
    """Learns from scratch on every fit once ML_MIN_ANNOTATIONS readable images carry at least two labels.

    Versions are v<N>-<UTC time>; "untrained" until the first model. The model file survives restarts.
    """

    INITIAL_MODEL_VERSION = "untrained"

    def setup(self) -> None:
        self.studio = LabelStudio(self.hostname or "http://app:8000", self.access_token)
        self.trained = load_trained(self.path(), self.project_id)
        if self.trained is not None:
            self.model_version = self.trained.version

    def path(self) -> Path:
        return self.model_dir / f"project-{self.project_id}-image.joblib"

    def image_features(self, task: dict[str, Json], data_key: str) -> Features | None:
        """The features of the task's image; None, after one log line saying why, when it cannot be read."""
        url = (task.get("data") or {}).get(data_key)
        try:
            if not isinstance(url, str):
                raise ImageError(f"no ${data_key} in the task's data")
            content = self.studio.read_file(studio_path(url), MAX_BYTES)
            return features(decode(content))
        except (ImageError, TooLargeError, requests.RequestException) as exc:
            shown = url if isinstance(url, str) and len(url) <= 200 else f"{str(url)[:200]}..."
            log.warning("project %s: task %s: cannot use image %s: %s", self.project_id, task.get("id"), shown, exc)
            return None

    def predict(self, tasks: list[dict[str, Json]], context: Json = None, **kwargs: Json) -> list[Json]:
        trained = self.trained
        if trained is None:
            return []
        rows = [self.image_features(task, trained.target.data_key) for task in tasks]
        valid = [i for i, row in enumerate(rows) if row is not None]
        probas = trained.model.predict_proba([rows[i] for i in valid]) if valid else []
        by_index = dict(zip(valid, probas, strict=True))
        # An unreadable image gets an empty result (and score 0), never an error.
        return [prediction(trained, by_index.get(i)) for i in range(len(tasks))]

    def fit(self, event: str, data: dict[str, Json], **kwargs: Json) -> Json:
        started = time.monotonic()
        target = labelconfig.parse_image_choices(self.label_config or "")
        if target is None:
            log.info("project %s: no <Choices> bound to an <Image>: nothing to train", self.project_id)
            return None
        rows, labels = [], []
        for task in data["tasks"]:
            choices = [
                c
                for r in latest_results(task, target.from_name) or []
                for c in (r.get("value") or {}).get("choices") or []
            ]
            row = self.image_features(task, target.data_key) if choices else None
            if row is not None:
                rows.append(row)
                labels.append(choices[0])
        if len(rows) < MIN_ANNOTATIONS or len(set(labels)) < 2:
            log.info("project %s: %d images, %d labels: not enough yet", self.project_id, len(rows), len(set(labels)))
            return None
        model = ImageChoicesModel()
        model.fit(rows, labels)
        version = next_version(self.model_version)
        trained = Trained(model, version, target, len(rows), round(time.monotonic() - started, 3))
        save_trained(trained, self.path())
        self.trained = trained
        self.model_version = version
        log.info("project %s: trained %s on %d images in %.2fs", self.project_id, version, len(rows), trained.seconds)
        return {"model_version": version, "annotations": len(rows), "seconds": trained.seconds}
