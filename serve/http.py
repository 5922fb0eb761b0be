"""The HTTP surface of the ingress: the FastAPI app, its body-size limit, its error bodies and
the optional API key.

Errors are short and never echo the request: a body over ``max_body_bytes`` is a 413, a body
that does not validate is a 422 listing each problem's place and message (no input values), a
missing or wrong key is a 401. Keys are compared as SHA-256 digests with
``hmac.compare_digest``; the deployment only ever holds the digests.
"""

import hashlib
import hmac
from collections.abc import Callable, Sequence

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

API_KEY_HEADER = "x-api-key"
OPEN_PATHS = ("/healthz",)


def digest(key: str) -> str:
    """The SHA-256 hex digest of an API key: what the deployment is given."""
    return hashlib.sha256(key.strip().encode()).hexdigest()


def key_ok(presented: str | None, digests: Sequence[str]) -> bool:
    """Whether ``presented`` is one of the keys (constant time per digest)."""
    if presented is None:
        return False
    mine = digest(presented)
    return any(hmac.compare_digest(mine, d) for d in digests)


class Guard:
    """Pure ASGI middleware: the 413 and the 401 before the app reads the body (Starlette's
    ``BaseHTTPMiddleware`` would run the app in a task behind memory streams, ~ms a call)."""

    def __init__(self, app: ASGIApp, limits: Callable[[], tuple[int, Sequence[str]]]) -> None:
        self.app, self.limits = app, limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            max_body, digests = self.limits()
            headers = dict(scope["headers"])
            length = headers.get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > max_body):
                refused = JSONResponse({"detail": f"request body over {max_body} bytes"}, 413)
                return await refused(scope, receive, send)
            key = headers.get(API_KEY_HEADER.encode())
            if digests and scope["path"] not in OPEN_PATHS and \
                    not key_ok(key.decode("latin-1") if key is not None else None, digests):
                refused = JSONResponse({"detail": f"missing or wrong {API_KEY_HEADER} header"},
                                       401)
                return await refused(scope, receive, send)
        await self.app(scope, receive, send)


def make_api(limits: Callable[[], tuple[int, Sequence[str]]]) -> FastAPI:
    """The FastAPI app; ``limits()`` gives (max body bytes, key digests: empty = no auth)."""
    api = FastAPI(title="recstream", description="DIN/DIEN ranking over streaming features")

    api.add_middleware(Guard, limits=limits)

    @api.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [{"loc": [str(p) for p in e.get("loc", ())][:4],
                     "msg": str(e.get("msg", ""))[:200]} for e in exc.errors()[:10]]
        return JSONResponse({"detail": problems}, 422)

    return api


def bad_request(status: int, message: str, **headers: str) -> HTTPException:
    return HTTPException(status, message[:300], headers=headers or None)
