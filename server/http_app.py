"""The HTTP front door: an OpenAI-compatible API and the playground page, as a FastAPI app.

Same engine, queue, limits, auth and metrics as the gRPC door: every generation goes
through the door-neutral Generator (server/generation.py), and refusals answer with the
OpenAI error body (400 naming the field, 401, 429 for a full queue, 503 while draining).
`ApiEdge`, a plain ASGI middleware, does for each API call what the gRPC interceptor and
servicer wrapper do for an RPC: bearer token, request id (`x-request-id`, echoed), one
access-log line and the kvserve_requests_total count, labelled with the route as `rpc` (a
path, so HTTP and gRPC traffic tell apart) and the outcome in gRPC's status names.
A call's body becomes Asks in server/openai_requests.py and is answered by
server/http_answer.py. A client that disconnects ends its requests at once (there); it, and
one that left before its body was in, is counted CANCELLED with nginx's 499.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from fastapi import FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.types import Message, Receive, Scope, Send

from server import logs
from server.auth import TokenStore, bearer_token
from server.generation import Draining, GenerationFailed, Generator, InvalidArgument, QueueFull
from server.handover import Verdict
from server.http_answer import CLIENT_GONE, Answerer, ClientGone, failed_error
from server.http_schema import (
    STREAMED,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Completion,
    CompletionChunk,
    CompletionRequest,
    ErrorBody,
    Health,
    ModelList,
    event_stream,
)
from server.openai_requests import NOT_SUPPORTED, ApiError, chat_ask, completion_ask
from server.validation import REQUEST_ID, check_request_id

log = logging.getLogger("kvserve.http")
PLAYGROUND = Path(__file__).with_name("playground.html")
COMPLETIONS, CHAT, MODELS = "/v1/completions", "/v1/chat/completions", "/v1/models"
HEALTH = "/health"
API_ROUTES = frozenset({COMPLETIONS, CHAT, MODELS})  # counted and access-logged, as RPCs are
RETRY_AFTER = {429: "1", 503: "1"}


class DoorMetrics(Protocol):
    """What the door reports to (server.metrics.Metrics)."""

    def observe_rpc(self, rpc: str, code: str, seconds: float) -> None: ...

    def observe_answer(self, verdict: Verdict) -> None: ...


@dataclass(frozen=True)
class HttpDoor:
    """What the HTTP app needs from the server around it."""

    generator: Generator
    model: str  # the served model's id
    max_model_len: int
    metrics: DoorMetrics
    serving: Callable[[], bool]  # the health state gRPC health reports too
    tokens: TokenStore | None = None  # None = no token needed
    exempt_health: bool = False


def create_app(door: HttpDoor) -> ApiEdge:
    app = FastAPI(
        title="kvserve",
        version="1",
        summary="OpenAI-compatible completions and chat over kvserve's batching engine",
        docs_url=None,  # Swagger UI and ReDoc load from a CDN: this server works offline
        redoc_url=None,
    )
    created = int(time.time())
    _routes(app, door, created)
    _error_handlers(app)
    app.openapi = lambda: _openapi(app, door)  # type: ignore[method-assign]
    return ApiEdge(app, door)


ERRORS = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (400, "a bad field (named in error.param) or an unsupported feature"),
        (401, "missing or wrong bearer token (when the server asks for one)"),
        (404, "no such model"),
        (429, "the queue is full: retry later"),
        (500, "the engine failed this request"),
        (503, "the server is draining or not ready: retry on another replica"),
        (504, "the request passed its deadline"),
    )
}


def _routes(app: FastAPI, door: HttpDoor, created: int) -> None:
    generator = door.generator
    request_id_header = Header(
        None, alias="x-request-id", pattern=REQUEST_ID.pattern, description="echoed back"
    )

    page = PLAYGROUND.read_text(encoding="utf-8")

    @app.get("/", include_in_schema=False)
    async def playground() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get(HEALTH, response_model=Health, responses={503: {"model": Health}})
    async def health() -> JSONResponse:
        """SERVING once warm and until a drain begins: the state gRPC health reports."""
        serving = door.serving() and not generator.draining
        status = "SERVING" if serving else "NOT_SERVING"
        return JSONResponse({"status": status}, 200 if serving else 503)

    @app.get(MODELS, response_model=ModelList, responses=ERRORS)
    async def models() -> JSONResponse:
        card = {
            "id": door.model,
            "object": "model",
            "created": created,
            "owned_by": "kvserve",
            "max_model_len": door.max_model_len,
        }
        return JSONResponse({"object": "list", "data": [card]})

    answerer = Answerer(generator, door.model, created, door.metrics.observe_answer)
    ok_completion = {"model": Completion, "content": event_stream(CompletionChunk)}
    ok_chat = {"model": ChatCompletion, "content": event_stream(ChatCompletionChunk)}

    @app.post(COMPLETIONS, responses={200: ok_completion, **ERRORS}, response_model=None)
    async def completions(
        body: CompletionRequest, request: Request, x_request_id: str | None = request_id_header
    ) -> Response:
        """Continue `prompt`; `stream` for server-sent events."""
        _check_model(body.model, door.model)
        converted = completion_ask(body, request.state.request_id)
        return await answerer.answer(request, converted, body.stream, body.stream_options)

    @app.post(CHAT, responses={200: ok_chat, **ERRORS}, response_model=None)
    async def chat(
        body: ChatCompletionRequest, request: Request, x_request_id: str | None = request_id_header
    ) -> Response:
        """Answer the last user message, with the system messages as its context, through
        the artifact's prompt template (what the gRPC Answer RPC gives)."""
        _check_model(body.model, door.model)
        converted = chat_ask(body, generator, request.state.request_id)
        return await answerer.answer(request, converted, body.stream, body.stream_options)


def _check_model(asked: str | None, served: str) -> None:
    if asked is not None and asked != served:
        problem = f"model {asked!r} is not served here (this server: {served!r})"
        raise ApiError(404, problem, "model")


def _error_handlers(app: FastAPI) -> None:
    """Every refusal as the OpenAI error body; the message also goes to the access line."""

    def reply(request: Request, error: ApiError) -> JSONResponse:
        request.state.problem = error.message
        return JSONResponse(error.body(), error.status, _error_headers(error))

    def handle(kind: type[Exception], to_error: Callable[[Request, Exception], ApiError]) -> None:
        async def handler(request: Request, e: Exception) -> Response:
            return reply(request, to_error(request, e))

        app.add_exception_handler(kind, handler)

    handle(ApiError, lambda request, e: e)
    handle(InvalidArgument, _invalid)
    handle(QueueFull, lambda request, e: ApiError(429, f"{e}; retry later"))
    handle(Draining, lambda request, e: ApiError(503, str(e)))
    handle(GenerationFailed, lambda request, e: failed_error(e))
    handle(RequestValidationError, lambda request, e: validation_error(e))
    handle(Exception, _bug)

    async def http_error(request: Request, e: Exception) -> Response:
        assert isinstance(e, HTTPException)  # 404 for an unknown path, 405 (with Allow), ...
        response = reply(request, ApiError(e.status_code, str(e.detail)))
        response.headers.update(e.headers or {})
        return response

    app.add_exception_handler(HTTPException, http_error)

    async def gone(request: Request, e: Exception) -> Response:
        return Response(status_code=CLIENT_GONE)  # nobody reads it; the edge counts it

    app.add_exception_handler(ClientGone, gone)


def _invalid(request: Request, e: InvalidArgument) -> ApiError:
    """The field in this request's own names (max_tokens for max_new_tokens, ...)."""
    param = getattr(request.state, "names", {}).get(e.field, e.field)
    return ApiError(400, f"{param}: {e.problem}", param)


def _bug(request: Request, e: Exception) -> ApiError:
    log.error("%s failed", request.url.path, exc_info=e)  # the cause goes to the log only
    return ApiError(500, f"internal error: {type(e).__name__}")


def _error_headers(error: ApiError) -> dict[str, str]:
    headers = {"retry-after": RETRY_AFTER[error.status]} if error.status in RETRY_AFTER else {}
    if error.status == 401:
        headers["www-authenticate"] = "Bearer"
    return headers


def validation_error(e: RequestValidationError) -> ApiError:
    """pydantic's complaint as one OpenAI error naming the field (messages[0].role).

    A field of several accepted forms (`stop`: a string or a list) fails once per form, at
    locations under the field: the field is their common part."""
    errors = e.errors()
    first = errors[0]
    group = [x for x in errors if tuple(x["loc"][:2]) == tuple(first["loc"][:2])]
    common = list(first["loc"])
    for other in group[1:]:
        same = 0
        while same < min(len(common), len(other["loc"])) and common[same] == other["loc"][same]:
            same += 1
        common = common[:same]
    location = [part for part in common if part not in ("body", "header")]
    param = ""
    for part in location:
        param += f"[{part}]" if isinstance(part, int) else f".{part}" if param else str(part)
    top = next((part for part in location if isinstance(part, str)), "")
    messages = list(dict.fromkeys(str(x.get("msg", "invalid")) for x in group))
    if top in NOT_SUPPORTED and first.get("type") != "missing":
        param, problem = top, NOT_SUPPORTED[top]
    elif first.get("type") == "extra_forbidden":
        problem = "not supported by kvserve (unknown field)"
    elif first.get("type") == "json_invalid":
        param, problem = "body", f"not valid JSON ({first.get('msg', '')})"
    else:
        problem = " or ".join(messages)
    param = param or "body"
    return ApiError(400, f"{param}: {problem}", param)


def _openapi(app: FastAPI, door: HttpDoor) -> dict:
    """FastAPI's schema, with the 400 this door answers instead of FastAPI's 422."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, summary=app.summary, routes=app.routes
        )
        for path in schema["paths"].values():
            for operation in path.values():
                operation["responses"].pop("422", None)
        components = schema.get("components", {}).get("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        _server_limits(components, door)
        for chunk in STREAMED:  # referenced from the event streams' schemas only
            definition = chunk.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(definition.pop("$defs", {}))
            components[chunk.__name__] = definition
        if door.tokens is not None:
            bearer = {"bearer": {"type": "http", "scheme": "bearer"}}
            schema.setdefault("components", {})["securitySchemes"] = bearer
            schema["security"] = [{"bearer": []}]
        app.openapi_schema = schema
    return app.openapi_schema


def _server_limits(components: dict, door: HttpDoor) -> None:
    """This server's own limits, in the request schemas it publishes: the most tokens a
    request may ask for, top_k up to the vocabulary, and the one model it serves."""
    limits = door.generator.limits
    for name in ("CompletionRequest", "ChatCompletionRequest"):
        fields = components[name]["properties"]
        for field in ("max_tokens", "max_completion_tokens"):
            if field in fields:
                _bound(fields[field], maximum=limits.max_new_tokens)
        if limits.vocab_size:
            _bound(fields["top_k"], maximum=limits.vocab_size)
        _bound(fields["model"], enum=[door.model])


def _bound(field: dict, **constraints) -> None:
    """Add constraints to a (maybe nullable: anyOf [T, null]) property's non-null branch."""
    for branch in field.get("anyOf", [field]):
        if branch.get("type") != "null":
            branch.update(constraints)


class ApiEdge:
    """ASGI middleware around the app: token, request id, count and access line per call."""

    def __init__(self, app: FastAPI, door: HttpDoor) -> None:
        self.app = app
        self.door = door

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or (path not in API_ROUTES and path != HEALTH):
            await self.app(scope, receive, send)
            return
        record = logs.begin(path) if path in API_ROUTES else None
        start = time.monotonic()
        state = scope.setdefault("state", {})
        seen = {"status": 0, "done": False, "gone": False}
        headers: list[tuple[bytes, bytes]] = []

        async def receive_watched() -> Message:
            # a client that leaves before its body is in makes FastAPI answer 400 "error
            # parsing the body" to nobody: the disconnect is what the call's record must say
            message = await receive()
            if message["type"] == "http.disconnect" and not seen["done"]:
                seen["gone"] = True
            return message

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                message = {**message, "headers": [*message.get("headers", []), *headers]}
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                seen["done"] = True
            await send(message)

        try:
            request_id = self._request_id(scope)
            headers.append((b"x-request-id", request_id.encode()))
            state["request_id"] = request_id
            logs.annotate(request_id=request_id)
            self._check_token(scope, path)
            await self.app(scope, receive_watched, send_with_id)
        except ApiError as e:
            state["problem"] = e.message
            await _send_error(send_with_id, e)
        except Exception as e:  # already answered by the app's handler (500); not re-raised
            if not seen["status"]:
                await _send_error(send_with_id, _bug_at(path, e))
        finally:
            if record is not None:
                self._account(record, seen, state, start)

    @staticmethod
    def _request_id(scope: Scope) -> str:
        try:
            return check_request_id(_header(scope, b"x-request-id") or "")
        except InvalidArgument as e:
            raise ApiError(400, f"x-request-id: {e.problem}", "x-request-id") from None

    def _check_token(self, scope: Scope, path: str) -> None:
        tokens = self.door.tokens
        if tokens is None or (path == HEALTH and self.door.exempt_health):
            return
        value = _header(scope, b"authorization")
        token = bearer_token([("authorization", value)] if value else [])
        if token is not None and tokens.accepts(token):
            return
        problem = "missing bearer token" if token is None else "invalid bearer token"
        log.info("unauthenticated call to %s: %s", path, problem)
        raise ApiError(401, f"{problem} (send 'Authorization: Bearer <token>')")

    def _account(self, record: logs.RequestLog, seen: dict, state: dict, start: float) -> None:
        status = seen["status"]
        if seen["gone"] or (status == 200 and not seen["done"]):
            status = CLIENT_GONE  # the client left before its whole answer was out
        if status == CLIENT_GONE:
            code = "CANCELLED"
        elif status == 200:
            code = state.get("outcome", "OK")
        else:
            code = ApiError(status, "").code
        elapsed = time.monotonic() - start
        self.door.metrics.observe_rpc(record.rpc, code, elapsed)
        record.http_status = status
        logs.access(record, code, elapsed, state.get("problem", ""))


def _bug_at(path: str, e: Exception) -> ApiError:
    log.error("%s failed", path, exc_info=e)
    return ApiError(500, f"internal error: {type(e).__name__}")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


async def _send_error(send: Send, error: ApiError) -> None:
    response = JSONResponse(error.body(), error.status, _error_headers(error))
    await send(
        {"type": "http.response.start", "status": error.status, "headers": response.raw_headers}
    )
    await send({"type": "http.response.body", "body": response.body})
