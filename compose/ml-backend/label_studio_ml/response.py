"""Import shim for `from label_studio_ml.response import ModelResponse`."""

from labelstack_ml.base import ModelResponse

__all__ = ["ModelResponse"]
