"""The checked-in OpenAPI document is the one the API serves."""

from __future__ import annotations

import json
from pathlib import Path


def test_openapi_document_is_current() -> None:
    from worker.api.app import openapi_document

    path = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
    assert json.loads(path.read_text()) == openapi_document(), "run `make schema` and commit docs/"


def test_openapi_documents_every_route_and_the_job() -> None:
    from worker.api.app import openapi_document

    document = openapi_document()
    assert set(document["paths"]) == {
        "/v1/messages",
        "/v1/messages:batch",
        "/v1/messages/{job_id}",
        "/v1/messages/{job_id}/cancel",
        "/v1/failed-sends",
        "/v1/failed-sends/{failed_id}",
        "/v1/failed-sends/{failed_id}/resend",
        "/v1/suppressions",
        "/v1/events",
        "/v1/webhooks",
        "/v1/webhooks/{endpoint_id}",
        "/v1/accounts",
        "/v1/accounts/{kind}/authorize",
        "/v1/accounts/{owner}/smtp",
        "/v1/accounts/{owner}/preferred",
        "/v1/accounts/{owner}/{channel}",
        "/v1/oauth/callback",
        "/v1/domains",
        "/v1/domains/{domain}",
        "/v1/domains/{domain}/verify",
        "/v1/identities",
        "/healthz",
        "/metrics",
    }
    post = document["paths"]["/v1/messages"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/SendJob"
    }
    assert {"202", "401", "403", "413", "422"} <= set(post["responses"])
    assert "owner" in document["components"]["schemas"]["SendJob"]["properties"]


def test_the_intake_imports_nothing_of_the_store_or_delivery() -> None:
    # the intake (worker/api/core.py and what it needs) plugs the store-backed parts in through
    # Extensions: importing it loads no store, no SQLAlchemy and no delivery machinery
    import subprocess
    import sys

    code = (
        "import sys, worker.api.core; "
        "print(sorted(m for m in sys.modules if m.startswith(('worker.', 'sqlalchemy', 'aiosmtplib'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    loaded = json.loads(out.stdout.strip().replace("'", '"'))  # a printed list of names
    intake = ["worker.api", "worker.api.bodylimit", "worker.api.core", "worker.api.intake"]
    intake += ["worker.api.models"]
    assert loaded == [*intake, "worker.api.scopes"], loaded
