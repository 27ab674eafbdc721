"""X-Request-ID on every request and response: the client's (nginx sends its $request_id) when
it is a sane token, else a fresh one. The prediction log keys its records by it, and POST
/feedback names a prediction by it."""

from __future__ import annotations

import re
import uuid

from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "x-request-id"
VALID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")  # e.g. nginx's 32 hex digits, a UUID


def new_request_id() -> str:
    return uuid.uuid4().hex


def accepted(value: str | None) -> str | None:
    return value if value is not None and VALID.fullmatch(value) else None


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = next((v for k, v in scope["headers"] if k == HEADER.encode()), None)
        request_id = accepted(sent.decode("latin-1") if sent is not None else None)
        request_id = request_id or new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k != HEADER.encode()]
                message["headers"] = [*headers, (HEADER.encode(), request_id.encode())]
            await send(message)

        await self.app(scope, receive, send_with_id)


def request_id_of(request: Request) -> str:
    return getattr(request.state, "request_id", None) or new_request_id()
