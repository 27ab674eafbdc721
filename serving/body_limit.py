"""Request body caps per path, enforced before and while the body streams in.

A declared Content-Length over the cap is answered 413 at once, without reading the body; a
body without one (chunked) is counted as it arrives and stopped at the cap. (FastAPI's own
`max_body_size` would replace our JSON error with a plain-text one.)
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLargeError(HTTPException):
    """Raised from `receive` once the streamed body passes the cap; the app's HTTPException
    handler turns it into the JSON 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=f"request body over {limit} bytes")


class BodyLimitMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        limit_for_path: Callable[[str], int],
        reject: Callable[[Scope, Receive, Send], object],
    ) -> None:
        self.app = app
        self.limit_for_path = limit_for_path
        self.reject = reject  # sends the 413 response when Content-Length is already too big

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for_path(scope["path"])
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await self.reject(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLargeError(limit)
            return message

        await self.app(scope, limited_receive, send)
