"""The browser tier: Label Studio used through headless Chromium as a person uses it (issue 14).

This file makes tests/ui a package: its modules import their helpers as `.uilib`, and its conftest.py is
imported as `ui.conftest` instead of a second top-level module `conftest`.
"""
