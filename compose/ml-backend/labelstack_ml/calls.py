"""Build and call model classes the way their signatures expect: today's documented API and the 1.0.9 one.

Current: __init__(project_id=…, label_config=…), predict(tasks, context=None, **kwargs), fit(event, data).
1.0.9:   __init__(label_config=…, train_output=…, **kwargs), predict(tasks, **kwargs),
         fit(annotations|completions|tasks, workdir=None, **kwargs) whose return value is the next train_output.
Everything is passed by keyword and only where the signature takes it, so either shape gets what it reads.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from .base import Json, LabelStudioMLBase, ModelResponse

POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def accepted(func: Callable[..., Any], kwargs: dict[str, Json]) -> dict[str, Json]:
    """The part of `kwargs` that `func` takes: all of it with **kwargs, else the named parameters."""
    params = inspect.signature(func).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return kwargs
    names = {p.name for p in params if p.kind is not inspect.Parameter.VAR_POSITIONAL}
    return {k: v for k, v in kwargs.items() if k in names}


def construct(model_class: type[LabelStudioMLBase], **kwargs: Json) -> LabelStudioMLBase:
    return model_class(**accepted(model_class.__init__, kwargs))


def is_event_fit(model: LabelStudioMLBase) -> bool:
    """Today's fit(event, data, …); the 1.0.9 fit starts with the annotated tasks instead."""
    positional = [p for p in inspect.signature(model.fit).parameters.values() if p.kind in POSITIONAL]
    return bool(positional) and positional[0].name == "event"


def fit(model: LabelStudioMLBase, event: str, data: dict[str, Json], workdir: str) -> Json:
    """Run the model's fit on `data` ({"project": …, "tasks": annotated tasks}); its return value."""
    if is_event_fit(model):
        return model.fit(event, data)
    extra = accepted(model.fit, {"workdir": workdir, "event": event, "data": data})
    positional = [p for p in inspect.signature(model.fit).parameters.values() if p.kind in POSITIONAL]
    return model.fit(data["tasks"], **extra) if positional else model.fit(**extra)


def predict(model: LabelStudioMLBase, tasks: list[dict[str, Json]], **params: Json) -> list[Json]:
    """The model's predictions as Label Studio's `results`: plain JSON, each carrying a model_version.

    Label Studio skips tasks that already have a prediction of the version /setup reported; a prediction
    without a version of its own gets that one, so a revisit does not store a duplicate.
    """
    response = model.predict(tasks, **accepted(model.predict, params))
    version = model.model_version
    if isinstance(response, ModelResponse):
        version = response.model_version or version
        response = response.predictions
    elif isinstance(response, dict):
        if "predictions" not in response:
            raise TypeError(f"{type(model).__name__}.predict returned a dict without 'predictions': {list(response)}")
        response = response["predictions"]
    return [_versioned(plain(p), version) for p in response or []]


def _versioned(prediction: Json, version: str) -> Json:
    if isinstance(prediction, list):
        return [_versioned(p, version) for p in prediction]
    if isinstance(prediction, dict):
        return {**prediction, "model_version": prediction.get("model_version") or version}
    return prediction


def plain(value: Json) -> Json:
    """JSON-ready: numpy scalars and arrays (.item/.tolist) and pydantic objects (.model_dump) made plain."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    for method in ("model_dump", "tolist", "item"):
        if callable(getattr(value, method, None)):
            return plain(getattr(value, method)())
    return value
