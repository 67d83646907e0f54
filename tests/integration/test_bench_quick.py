"""`scripts/bench.py --quick` against the deployment under test, so the benchmark cannot silently rot.

It must run to the end on both sides (the deployed stack and a quick start it starts and stops itself), write
its results, and export on each side exactly what it imported and annotated. Speed is the benchmark's business
(its numbers live in the README); nothing here is timed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from labelstack_testlib import REPO, Deployment

# The first run builds the quick start's virtualenv (pip install label-studio); later runs reuse it.
TIMEOUT = 1800


def test_quick_bench_runs_and_exports_what_it_imported(deployment: Deployment, tmp_path: Path) -> None:
    credentials = dict(deployment.credentials)
    if deployment.ca_bundle:  # the host's CA path, copied here by the deployment fixture
        credentials["LABELSTACK_CA_CERT"] = deployment.ca_bundle
    creds_file = tmp_path / "credentials.env"
    creds_file.touch(mode=0o600)
    creds_file.write_text("".join(f"{key}='{value}'\n" for key, value in credentials.items()))
    out = tmp_path / "bench"
    # conftest points the CA variables at the deployment's CA; the quick start's pip needs the machine's trust.
    env = {k: v for k, v in os.environ.items() if k not in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")}

    run = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench.py"), "--quick", "--credentials", str(creds_file),
         "--output-dir", str(out)],
        capture_output=True, text=True, timeout=TIMEOUT, env=env, check=False,
    )  # fmt: skip

    assert run.returncode == 0, f"bench.py --quick failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    report = json.loads((out / "latest.json").read_text())
    assert (out / "latest.md").read_text().count("| exported tasks |") == 1
    workload = report["workload"]
    for side in ("deployed", "quickstart"):
        figures = report["sides"][side]
        assert (figures["exported_tasks"], figures["exported_annotations"]) == (
            workload["tasks"],
            workload["annotations"],
        ), f"{side}: exported counts differ from what was imported and annotated"
        assert figures["peak_rss_mib"] > 0, f"{side}: no resident memory measured"
