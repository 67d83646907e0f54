"""SDK smoke tests against a running labelstack deployment.

This file makes tests/smoke a package on purpose: its conftest.py is then imported as `smoke.conftest`, so
`from conftest import Deployment` keeps resolving to tests/conftest.py (without it both files would be the
module `conftest`, and the second would shadow the first).
"""
