"""`scripts/bench.py --quick --scale` against the deployment under test, so the benchmark cannot silently rot.

It must run to the end on both sides (the deployed stack and a quick start it starts and stops itself) at both
quick sizes, write its results, and export on each side exactly what it imported and annotated. The scale mode
runs the whole workload of a plain `make bench` plus the Data Manager filters and project counts, whose answers
bench.py itself checks on both sides (totals, the first page's tasks, their order). Speed is the benchmark's
business (its numbers live in the README); nothing here is timed.
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


def test_quick_scale_bench_runs_filters_and_counts_and_exports_what_it_imported(
    deployment: Deployment, tmp_path: Path
) -> None:
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
        [sys.executable, str(REPO / "scripts" / "bench.py"), "--quick", "--scale", "--credentials", str(creds_file),
         "--output-dir", str(out)],
        capture_output=True, text=True, timeout=TIMEOUT, env=env, check=False,
    )  # fmt: skip

    assert run.returncode == 0, f"bench.py --quick --scale failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    report = json.loads((out / "latest.json").read_text())
    sizes = report["workload"]["sizes"]
    assert len(sizes) == 2, f"two quick sizes expected, got {sizes}"
    table = (out / "latest.md").read_text()
    assert table.count("| exported tasks |") == 3, "a table per size and the cost curve expected"
    annotations = report["workload"]["annotations"]
    for size in sizes:
        for side in ("deployed", "quickstart"):
            figures = report["sizes"][str(size)][side]
            assert (figures["exported_tasks"], figures["exported_annotations"]) == (size, annotations), (
                f"{side} at {size}: exported counts differ from what was imported and annotated"
            )
            assert figures["peak_rss_mib"] > 0, f"{side} at {size}: no resident memory measured"
            for key in ("filter_unlabeled", "filter_text", "filter_score", "project_counts", "dm_counts"):
                assert figures[f"{key}_p95_ms"] > 0, f"{side} at {size}: {key} not measured"
    for side in ("deployed", "quickstart"):
        assert report["growth"][side]["page_p95_ms"] is not None, f"{side}: no cost curve"
