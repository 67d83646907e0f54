"""labelstack's built-in entity recognizer for <Labels> bound to a <Text>: a linear-chain CRF (python-crfsuite).

EntityRecognizer is an ordinary LabelStudioMLBase subclass (a worked example of a span model); SpanModel is the
CRF part it trains. Tokens keep their character offsets, so a predicted span's start/end slice the task's text
to exactly its "text" (Label Studio highlights by offsets).
"""

from __future__ import annotations

import re
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pycrfsuite

from . import labelconfig
from .base import Json, LabelStudioMLBase, next_version
from .model import MIN_ANNOTATIONS, Trained, latest_results, load_trained, log, save_trained

# A word (letters, digits, underscore, with inner apostrophes or hyphens: "O'Neil", "Jean-Luc") or any other
# single non-space character. Whitespace is never inside a token, so a span never starts or ends in it.
TOKEN = re.compile(r"\w+(?:['\u2019-]\w+)*|[^\w\s]")
OUTSIDE = "O"


@dataclass(frozen=True)
class Token:
    start: int  # character offsets in the text: text[start:end] == word
    end: int
    word: str


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    label: str


def tokenize(text: str) -> list[Token]:
    return [Token(m.start(), m.end(), m.group()) for m in TOKEN.finditer(text)]


def bio_tags(tokens: Sequence[Token], spans: Sequence[Span]) -> list[str]:
    """B-<label>/I-<label>/O per token: a token belongs to the span it overlaps (an annotator's span that
    starts or ends inside a word claims the whole word).
    """
    tags = [OUTSIDE] * len(tokens)
    for span in sorted(spans, key=lambda s: s.start):
        inside = [i for i, t in enumerate(tokens) if t.start < span.end and t.end > span.start]
        for n, i in enumerate(inside):
            if tags[i] == OUTSIDE:
                tags[i] = f"{'B' if n == 0 else 'I'}-{span.label}"
    return tags


def spans_of(tokens: Sequence[Token], tags: Sequence[str]) -> list[tuple[Span, list[int]]]:
    """The spans a tag sequence marks, each with the indexes of its tokens; an I- without its B- starts one."""
    found: list[tuple[Span, list[int]]] = []
    for i, (token, tag) in enumerate(zip(tokens, tags, strict=True)):
        if tag == OUTSIDE:
            continue
        kind, _, label = tag.partition("-")
        last = found[-1] if found else None
        if kind == "I" and last is not None and last[0].label == label and last[1][-1] == i - 1:
            found[-1] = (Span(last[0].start, token.end, label), [*last[1], i])
        else:
            found.append((Span(token.start, token.end, label), [i]))
    return found


def shape(word: str) -> str:
    """ "Xxxx" for "Paris", "dd" for "42": capitals, digits and the rest, runs collapsed."""
    mapped = re.sub(r"[A-Z]", "X", re.sub(r"[a-z]", "x", re.sub(r"\d", "d", word)))
    return re.sub(r"(.)\1+", r"\1\1", mapped)


def word_features(word: str, prefix: str) -> dict[str, Any]:
    return {
        f"{prefix}lower": word.lower(),
        f"{prefix}title": word.istitle(),
        f"{prefix}upper": word.isupper(),
        f"{prefix}shape": shape(word),
    }


def features(tokens: Sequence[Token]) -> list[dict[str, Any]]:
    """Per token: the word, its shape, affixes and those of its neighbours (two each side)."""
    rows = []
    for i, token in enumerate(tokens):
        word = token.word
        row: dict[str, Any] = {
            "bias": 1.0,
            **word_features(word, ""),
            "digit": word.isdigit(),
            "suffix3": word[-3:].lower(),
            "suffix2": word[-2:].lower(),
            "prefix3": word[:3].lower(),
            "first": i == 0,
            "last": i == len(tokens) - 1,
        }
        for offset in (-2, -1, 1, 2):
            j = i + offset
            if 0 <= j < len(tokens):
                row.update(word_features(tokens[j].word, f"{offset:+d}:"))
        rows.append(row)
    return rows


class SpanModel:
    """CRF over token features, trained from scratch by fit(texts, spans); predict(text) -> [(Span, score)], and
    the text's score: the lowest marginal probability of any token's tag, so one doubtful word makes a doubtful
    task. Holds the CRF as bytes (pickles with joblib); the tagger is opened from them on first use.
    """

    def __init__(self) -> None:
        self.crf: bytes = b""
        self._tagger: pycrfsuite.Tagger | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"crf": self.crf}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]
        self.crf = state["crf"]

    def fit(self, texts: Sequence[str], spans: Sequence[Sequence[Span]]) -> None:
        trainer = pycrfsuite.Trainer(verbose=False)
        for text, text_spans in zip(texts, spans, strict=True):
            tokens = tokenize(text)
            if tokens:
                trainer.append(features(tokens), bio_tags(tokens, text_spans))
        # L1 + L2 (elastic net) as sklearn-crfsuite's tutorial; 100 L-BFGS iterations take about a second.
        trainer.set_params({"c1": 0.1, "c2": 0.05, "max_iterations": 100, "feature.possible_transitions": True})
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "crf.model"
            trainer.train(str(path))
            self.crf = path.read_bytes()
        self._tagger = None

    def predict(self, text: str) -> tuple[list[tuple[Span, float]], float]:
        tokens = tokenize(text)
        if not tokens:
            return [], 1.0
        with self._lock:  # one tagger per model; crfsuite keeps the current sequence in it
            if self._tagger is None:
                tagger = pycrfsuite.Tagger()
                tagger.open_inmemory(self.crf)
                self._tagger = tagger
            tags = self._tagger.tag(features(tokens))
            confidence = [self._tagger.marginal(tag, i) for i, tag in enumerate(tags)]
        found = [(span, min(confidence[i] for i in idx)) for span, idx in spans_of(tokens, tags)]
        return found, min(confidence)


def examples(tasks: list[dict[str, Json]], target: labelconfig.ChoicesTarget) -> tuple[list[str], list[list[Span]]]:
    """(texts, spans): per annotated task its text and the spans of its latest non-cancelled annotation (a text
    annotated with no span at all is an example too: it teaches what is not an entity).
    """
    texts, spans = [], []
    for task in tasks:
        text = (task.get("data") or {}).get(target.data_key)
        results = latest_results(task, target.from_name)
        if not isinstance(text, str) or results is None:
            continue
        found = []
        for result in results:
            value = result.get("value") or {}
            start, end, labels = value.get("start"), value.get("end"), value.get("labels") or []
            if isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(text) and labels:
                found.append(Span(start, end, str(labels[0])))
        texts.append(text)
        spans.append(found)
    return texts, spans


class EntityRecognizer(LabelStudioMLBase):
    """Learns from scratch on every fit once ML_MIN_ANNOTATIONS texts are annotated and one holds a span.

    Versions are v<N>-<UTC time>; "untrained" until the first model. The model file survives restarts.
    """

    INITIAL_MODEL_VERSION = "untrained"

    def setup(self) -> None:
        self.trained = load_trained(self.path(), self.project_id)
        if self.trained is not None:
            self.model_version = self.trained.version

    def path(self) -> Path:
        return self.model_dir / f"project-{self.project_id}-ner.joblib"

    def predict(self, tasks: list[dict[str, Json]], context: Json = None, **kwargs: Json) -> list[Json]:
        trained = self.trained
        if trained is None:
            return []
        return [self.predict_one(trained, (task.get("data") or {}).get(trained.target.data_key)) for task in tasks]

    @staticmethod
    def predict_one(trained: Trained, text: Json) -> dict[str, Json]:
        if not isinstance(text, str):
            return {"result": [], "score": 0.0, "model_version": trained.version}
        found, score = trained.model.predict(text)
        target = trained.target
        result = [
            {
                "from_name": target.from_name,
                "to_name": target.to_name,
                "type": "labels",
                "value": {
                    "start": span.start,
                    "end": span.end,
                    "text": text[span.start : span.end],
                    "labels": [span.label],
                },
                "score": span_score,
            }
            for span, span_score in found
        ]
        return {"result": result, "score": score, "model_version": trained.version}

    def fit(self, event: str, data: dict[str, Json], **kwargs: Json) -> Json:
        started = time.monotonic()
        target = labelconfig.parse_labels(self.label_config or "")
        if target is None:
            log.info("project %s: no <Labels> bound to a <Text>: nothing to train", self.project_id)
            return None
        texts, spans = examples(data["tasks"], target)
        n_spans = sum(len(s) for s in spans)
        if len(texts) < MIN_ANNOTATIONS or not n_spans:
            log.info("project %s: %d annotated texts, %d spans: not enough yet", self.project_id, len(texts), n_spans)
            return None
        model = SpanModel()
        model.fit(texts, spans)
        version = next_version(self.model_version)
        trained = Trained(model, version, target, len(texts), round(time.monotonic() - started, 3))
        save_trained(trained, self.path())
        self.trained = trained
        self.model_version = version
        log.info(
            "project %s: trained %s on %d texts (%d spans) in %.2fs",
            self.project_id,
            version,
            len(texts),
            n_spans,
            trained.seconds,
        )
        return {"model_version": version, "annotations": len(texts), "seconds": trained.seconds}
