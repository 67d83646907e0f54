"""Import shim for `from label_studio_ml.model import LabelStudioMLBase` (today's documentation)."""

from labelstack_ml.base import LabelStudioMLBase, ModelResponse

__all__ = ["LabelStudioMLBase", "ModelResponse"]
