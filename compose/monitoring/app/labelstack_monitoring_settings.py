"""labelstack_settings plus request metrics and a readiness check (labelstack_monitoring_enabled).

Mounted into the app container next to labelstack_settings and selected by compose/monitoring.yml with
DJANGO_SETTINGS_MODULE=labelstack_monitoring_settings, so a stack without monitoring runs exactly as before.
"""

from labelstack_settings import *  # noqa: F403 - extend the stack's settings, do not copy them

# Outermost: every response is counted, the ones the login limit refuses (429) included.
MIDDLEWARE = ["labelstack_request_metrics.RequestMetricsMiddleware", *MIDDLEWARE]  # noqa: F405
