"""serve.http without Ray: the body limit (413), the API key (401) and the short 422 bodies."""

import asyncio
import json
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from serve.http import API_KEY_HEADER, digest, make_api


class Body(BaseModel):
    user_id: int


class Answer:
    def __init__(self, status: int, body: bytes) -> None:
        self.status_code, self.text = status, body.decode()

    def json(self) -> Any:
        return json.loads(self.text)


class Client:
    """Calls an ASGI app directly, one HTTP request a call (no server, no httpx)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def request(self, method: str, path: str, body: bytes,
                headers: dict[str, str]) -> Answer:
        scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(),
                 "query_string": b"", "root_path": "", "scheme": "http",
                 "http_version": "1.1", "server": ("test", 80), "client": ("test", 1),
                 "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
        sent: list[dict[str, Any]] = []
        chunks = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            return chunks.pop(0) if chunks else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        asyncio.run(self.app(scope, receive, send))
        status = next(m["status"] for m in sent if m["type"] == "http.response.start")
        return Answer(status, b"".join(m.get("body", b"") for m in sent
                                       if m["type"] == "http.response.body"))

    def post(self, path: str, json: Any = None, content: bytes | None = None,
             headers: dict[str, str] | None = None) -> Answer:
        body = content if content is not None else __import__("json").dumps(json).encode()
        h = {"content-type": "application/json", "content-length": str(len(body))}
        return self.request("POST", path, body, h | (headers or {}))

    def get(self, path: str) -> Answer:
        return self.request("GET", path, b"", {})


def client(max_body: int = 1024, keys: tuple[str, ...] = ()) -> Client:
    api = make_api(lambda: (max_body, [digest(k) for k in keys]))

    @api.post("/rank")
    def rank(body: Body) -> dict[str, int]:
        return {"user_id": body.user_id}

    @api.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return Client(api)


def test_body_over_the_limit_is_a_413_before_the_app_reads_it() -> None:
    c = client(max_body=64)
    assert c.post("/rank", json={"user_id": 1}).json() == {"user_id": 1}
    big = c.post("/rank", content=b'{"user_id": 1, "pad": "' + b"x" * 100 + b'"}')
    assert big.status_code == 413 and "64 bytes" in big.json()["detail"]
    bad_length = c.post("/rank", content=b"{}", headers={"content-length": "-1"})
    assert bad_length.status_code == 413


def test_api_key_checked_except_on_healthz() -> None:
    c = client(keys=("s3cret",))
    assert c.post("/rank", json={"user_id": 1}).status_code == 401
    wrong = c.post("/rank", json={"user_id": 1}, headers={API_KEY_HEADER: "nope"})
    assert wrong.status_code == 401 and "s3cret" not in wrong.text
    assert c.post("/rank", json={"user_id": 2}, headers={API_KEY_HEADER: "s3cret"}).json() \
        == {"user_id": 2}
    assert c.get("/healthz").status_code == 200


def test_422_lists_places_not_values() -> None:
    r = client().post("/rank", json={"user_id": "secret-value-" * 50})
    assert r.status_code == 422
    assert "secret-value" not in r.text and r.json()["detail"][0]["loc"] == ["body", "user_id"]
