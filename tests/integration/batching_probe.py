"""Run inside the app container by test_batching.py: `manage.py shell` reads this file on stdin.

PROBE_MODE=setup adds what the API of open-source Label Studio cannot: another user's drafts and comment
authors on some tasks of project PROBE_PROJECT. PROBE_MODE=render prints, as one `RESULT {...}` line, the
data-manager pages (page sizes 10 and 100) and the JSON export of that project with their query counts,
rendered by the real views in this process (whose settings decide whether labelstack_batching is on).
PROBE_MODE=cleanup removes the other user.
"""

import json
import os

from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from projects.models import Project
from rest_framework.authtoken.models import Token
from tasks.models import AnnotationDraft, Task
from users.models import User

OTHER = "batching-probe@labelstack.invalid"
mode = os.environ["PROBE_MODE"]
project = Project.objects.get(id=int(os.environ["PROBE_PROJECT"])) if mode != "cleanup" else None

if mode == "setup":
    admin = project.created_by
    other, _ = User.objects.get_or_create(email=OTHER, defaults={"username": OTHER})
    tasks = list(Task.objects.filter(project=project).order_by("id")[:6])
    for task in tasks[:3]:
        AnnotationDraft.objects.create(task=task, user=other, result=[], lead_time=1.0)
    for task in tasks[2:6]:
        task.comment_authors.set([admin, other])
    print("RESULT {}")
elif mode == "render":
    token, _ = Token.objects.get_or_create(user=project.created_by)
    client = Client(SERVER_NAME="localhost", HTTP_AUTHORIZATION=f"Token {token.key}")
    urls = {
        "page10": f"/api/tasks?project={project.id}&page=1&page_size=10&fields=all",
        "page100": f"/api/tasks?project={project.id}&page=1&page_size=100&fields=all",
        "export": f"/api/projects/{project.id}/export?exportType=JSON&download_all_tasks=true",
    }
    result = {}
    for name, url in urls.items():
        with CaptureQueriesContext(connection) as queries:
            response = client.get(url)
            body = b"".join(response.streaming_content) if response.streaming else response.content
        assert response.status_code == 200, (url, response.status_code, body[:300])
        result[name] = {"body": json.loads(body), "queries": len(queries.captured_queries)}
    print("RESULT " + json.dumps(result))
elif mode == "cleanup":
    User.objects.filter(email=OTHER).delete()
    print("RESULT {}")
