"""Google's answers as maildispatch's errors (worker/channels/gmail.py ``translate``).

Google's error bodies are the documented JSON shape ({"error": {"code", "message", "status",
"errors": [{"reason"}]}}); what a user relies on: quota and server errors retried at the time
Google names, a lost grant or a missing scope an ``auth`` failure (reconnect), a rejection
recorded.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import google.auth.exceptions
import httpx
import pytest

from worker.channels.gmail import translate
from worker.errors import PermanentError, TransientError


def answer(status: int, reason: str = "", message: str = "", **headers: str) -> httpx.Response:
    body: dict[str, Any] = {"error": {"code": status, "message": message, "status": "X"}}
    if reason:
        body["error"]["errors"] = [{"reason": reason, "message": message}]
    return httpx.Response(status, json=body, headers=headers)


def test_quota_is_retried_after_the_seconds_google_names() -> None:
    error = translate(answer(429, "rateLimitExceeded", "slow down", **{"Retry-After": "42"}))
    assert isinstance(error, TransientError) and error.retry_after == 42.0


def test_a_retry_time_in_the_message_or_as_a_date_is_honoured() -> None:
    soon = datetime.now(UTC) + timedelta(minutes=10)
    text = f"User-rate limit exceeded.  Retry after {soon.strftime('%Y-%m-%dT%H:%M:%S.000Z')}"
    error = translate(answer(403, "userRateLimitExceeded", text))
    assert isinstance(error, TransientError)
    assert error.retry_after is not None and 590 <= error.retry_after <= 600
    dated = translate(answer(503, "backendError", "", **{"Retry-After": format_datetime(soon)}))
    assert dated.retry_after is not None and 590 <= dated.retry_after <= 600


def test_server_errors_are_retried() -> None:
    assert isinstance(translate(answer(500, "backendError", "oops")), TransientError)
    assert isinstance(
        translate(httpx.Response(502, text="<html>bad gateway</html>")), TransientError
    )


def test_a_rejected_message_is_recorded_with_googles_words() -> None:
    error = translate(answer(400, "invalidArgument", "Invalid To header"))
    assert isinstance(error, PermanentError) and error.kind == "rejected"
    assert "400" in error.text and "Invalid To header" in error.text


def test_a_missing_scope_or_a_refused_token_asks_for_a_reconnect() -> None:
    scope = translate(answer(403, "insufficientPermissions", "Insufficient Permission"))
    assert isinstance(scope, PermanentError) and scope.kind == "auth"
    assert "reconnect" in scope.text
    refused = translate(answer(401, "authError", "Invalid Credentials"))
    assert isinstance(refused, PermanentError) and refused.kind == "auth"


@pytest.mark.parametrize(
    ("error", "kind"),
    [("invalid_grant", "auth"), ("invalid_client", "config"), ("unauthorized_client", "config")],
)
def test_a_refresh_google_refuses_is_permanent(error: str, kind: str) -> None:
    exc = google.auth.exceptions.RefreshError(
        f"{error}: Bad Request", {"error": error, "error_description": "Bad Request"}
    )
    result = translate(exc)
    assert isinstance(result, PermanentError) and result.kind == kind
    assert error in result.text


def test_an_unreachable_google_is_retried() -> None:
    assert isinstance(translate(httpx.ConnectError("refused")), TransientError)
    unreachable = google.auth.exceptions.TransportError("connection reset")
    assert isinstance(translate(unreachable), TransientError)
    retryable = google.auth.exceptions.RefreshError("temporarily_unavailable", retryable=True)
    assert isinstance(translate(retryable), TransientError)


def test_what_is_not_googles_answer_is_raised_again() -> None:
    with pytest.raises(KeyError):
        translate(KeyError("a bug"))
