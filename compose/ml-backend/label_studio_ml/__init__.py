"""Import shim: model classes written for label-studio-ml (`from label_studio_ml import LabelStudioMLBase`,
`from label_studio_ml.model import LabelStudioMLBase`, `from label_studio_ml.response import ModelResponse`) run
on labelstack's compatible base class and server. Not the label-studio-ml package: see labelstack_ml/base.py.
"""

from labelstack_ml.base import LabelStudioMLBase
from labelstack_ml.server import serve

__all__ = ["LabelStudioMLBase", "serve"]
