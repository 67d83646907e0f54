"""The default ML_MODEL_CLASS: per project, the built-in model its label config calls for.

| label config                 | class                          | model                                   |
|------------------------------|--------------------------------|-----------------------------------------|
| <Choices> on <Text>          | model.TextClassifier           | TF-IDF + logistic regression            |
| <Labels> on <Text>           | ner.EntityRecognizer           | CRF over token features (crfsuite)      |
| <Choices> on <Image>         | image.ImageClassifier          | colour + HOG features, logistic regr.   |

The first of these pairings the config has wins (labelconfig.KINDS); a config with none gets no prediction.
Each class is an ordinary LabelStudioMLBase subclass and can be served alone (ML_MODEL_CLASS=module:Class).
"""

from __future__ import annotations

from . import calls, labelconfig
from .base import Json, LabelStudioMLBase
from .image import ImageClassifier
from .model import TextClassifier, log
from .ner import EntityRecognizer

MODELS: dict[str, type[LabelStudioMLBase]] = {
    "text-choices": TextClassifier,
    "ner": EntityRecognizer,
    "image-choices": ImageClassifier,
}


def model_class(label_config: str) -> type[LabelStudioMLBase] | None:
    """The built-in class for a label config; None when no built-in model serves it."""
    kind = labelconfig.model_kind(label_config)
    return MODELS[kind] if kind else None


class BuiltinModels(LabelStudioMLBase):
    """Delegates to the class model_class picks; the server builds a new instance when the label config changes,
    so a project whose config changes kind gets the other model (each keeps its own file).
    """

    INITIAL_MODEL_VERSION = "untrained"

    def setup(self) -> None:
        chosen = model_class(self.label_config or "")
        # Same project id, hence the same state (label config, model version) in the shared store.
        self.delegate = calls.construct(chosen, project_id=self.project_id) if chosen else None

    def predict(self, tasks: list[dict[str, Json]], context: Json = None, **kwargs: Json) -> list[Json]:
        if self.delegate is None:
            return []
        return calls.predict(self.delegate, tasks, context=context, **kwargs)

    def fit(self, event: str, data: dict[str, Json], **kwargs: Json) -> Json:
        if self.delegate is None:
            log.info("project %s: no label config a built-in model serves: nothing to train", self.project_id)
            return None
        return self.delegate.fit(event, data, **kwargs)
