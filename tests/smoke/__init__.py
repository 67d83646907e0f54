"""SDK smoke tests against a running labelstack deployment.

This file makes tests/smoke a package on purpose: its modules import their helpers as `.smokelib`, and its
conftest.py is imported as `smoke.conftest` instead of a second top-level module `conftest`.
"""
