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

# ---- Hardening (brute force, cookies, hosts, CORS). The deploy sets these variables from labelstack_url and
# labelstack_proxy_enabled (templates/env.j2).
# Failed logins and token attempts per client address: counted in a cache all uWSGI processes share (Label
# Studio's own cache is per process), kept in the data directory so that restarting the app does not reset it.
LABELSTACK_AUTH_MAX_FAILURES = int(os.environ["LABELSTACK_AUTH_MAX_FAILURES"])
LABELSTACK_AUTH_FAILURE_WINDOW = int(os.environ["LABELSTACK_AUTH_FAILURE_WINDOW"])
# The stack's TLS proxy (its compose service name), or "" without one: only its X-Real-IP and
# X-Forwarded-Proto headers are believed; anyone else could send them.
LABELSTACK_TRUSTED_PROXY = os.environ.get("LABELSTACK_TRUSTED_PROXY", "")
CACHES = {
    # Label Studio sets no CACHES: its default stays Django's, one memory cache per process.
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "labelstack-auth-failures": {
        "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
        "LOCATION": os.path.join(BASE_DATA_DIR, "cache", "auth-failures"),  # noqa: F405 - must match tests/security
        "TIMEOUT": LABELSTACK_AUTH_FAILURE_WINDOW,
        "OPTIONS": {"MAX_ENTRIES": 10000},
    },
}
# First, so that a refused attempt costs no session, CSRF or database work.
MIDDLEWARE = ["labelstack_security.AuthFailureLimitMiddleware", *MIDDLEWARE]  # noqa: F405
AUTH_PASSWORD_VALIDATORS = [
    *AUTH_PASSWORD_VALIDATORS,  # noqa: F405
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
if LABELSTACK_TRUSTED_PROXY:
    # nginx overwrites X-Forwarded-Proto on every request, so a client cannot claim HTTPS through it.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Behind TLS the browser must never send the session or CSRF cookie over plain HTTP.
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = os.environ["LABEL_STUDIO_HOST"].startswith("https://")
# Only the deployment's own origins may call the API from a browser page (Label Studio allows any origin).
CORS_ALLOW_ALL_ORIGINS = False
CORS_ALLOWED_ORIGINS = os.environ["CSRF_TRUSTED_ORIGINS"].split(",")
# The URL's host name and the loopback and service names the deploy, the healthcheck and the ML backend use.
ALLOWED_HOSTS = os.environ["LABELSTACK_ALLOWED_HOSTS"].split(",")
