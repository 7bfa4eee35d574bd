"""Every request body bounded before it is read whole: ``MAILDISPATCH_API_MAX_BODY_BYTES``.

Routes that take a JSON model have FastAPI read the body before anything else runs (the API
key's check included), so a bound in a route comes too late. This ASGI middleware answers 413
at once when the declared length is over the bound, and otherwise counts the bytes as they are
received, raising 413 (as an HTTPException, which FastAPI's body reading and the routes' own
``read_body`` pass on) once they pass it.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimit:
    """ASGI middleware: 413 for a request body larger than ``limit`` bytes."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = f"request body larger than {self.limit} bytes"
        declared = dict(scope.get("headers") or ()).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await JSONResponse({"detail": too_large}, status_code=413)(scope, receive, send)
            return
        seen = 0

        async def bounded() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise HTTPException(413, too_large)
            return message

        await self.app(scope, bounded, send)
