"""gunicorn's entry point (labelstack_ml.wsgi:app): the server configured from the environment, or a FAIL line."""

from __future__ import annotations

import logging
import os

from .server import create_app, settings_or_exit

logging.basicConfig(level=os.environ.get("ML_LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(message)s")
app = create_app(settings_or_exit())
