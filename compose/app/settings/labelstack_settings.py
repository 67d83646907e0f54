"""Label Studio's settings plus the tuning its environment variables cannot express.

Mounted into the app container and selected with DJANGO_SETTINGS_MODULE=labelstack_settings.
"""

import os

# Label Studio's settings read django.conf.settings while they are being imported (to set up error
# reporting): point that early read at Label Studio's own module, then back at this one.
_this_module = os.environ["DJANGO_SETTINGS_MODULE"]
os.environ["DJANGO_SETTINGS_MODULE"] = "core.settings.label_studio"
from core.settings.label_studio import *  # noqa: E402, F403 - extend Label Studio's settings, do not copy them

os.environ["DJANGO_SETTINGS_MODULE"] = _this_module

# Label Studio leaves CONN_MAX_AGE at 0: every request opens a new PostgreSQL connection (a server process
# forked and a SCRAM handshake each time). Keeping connections for this many seconds saves that per request;
# health checks drop one that died (e.g. after a database restart) before a request uses it.
DATABASES["default"]["CONN_MAX_AGE"] = int(os.environ.get("LABELSTACK_DB_CONN_MAX_AGE", "0"))  # noqa: F405
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True  # noqa: F405

# Task lists and exports without a query per task and relation (see labelstack_batching).
if os.environ.get("LABELSTACK_APP_BATCH_QUERIES", "false") == "true":
    INSTALLED_APPS = [*INSTALLED_APPS, "labelstack_batching.BatchingConfig"]  # noqa: F405
