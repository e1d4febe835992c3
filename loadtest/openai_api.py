"""--api openai: the same load models and report through any OpenAI-compatible HTTP server
(kvserve's HTTP door, vLLM, llama.cpp's server, TGI), so servers compare with one tool.

Each request is POST /v1/completions (a prompt) or /v1/chat/completions (a question, its
context as a system message), as server-sent events unless --rpc unary. TTFT is the first
chunk that carries text; each text chunk counts as one token for ITL (as vLLM's `bench
serve` counts them: OpenAI chunks carry no token ids); the output token count comes from
the usage chunk (stream_options.include_usage) when the server sends one. kvserve's own
knobs (top_k, repetition_penalty, ignore_eos) go as extra fields only when set, as vLLM
accepts them. Every failure becomes a record: HTTP_<status>, TIMEOUT, CONNECTION_ERROR.
kvserve's chat replies also carry each answer's verdict (`confidence`, `handed_over` on the
choice; streaming: on its last chunk), which the record keeps for the hand-over share.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp

from loadtest.channels import Security
from loadtest.errors import LoadTestError, TargetUnreachable
from loadtest.measure import token_latencies
from loadtest.messages import Knobs
from loadtest.prompts import Prompt
from loadtest.record import CLIENT_ERROR, OK, RequestRecord

COMPLETIONS, CHAT, MODELS = "/v1/completions", "/v1/chat/completions", "/v1/models"


def base_url(target: str) -> str:
    """The server's root URL from --target (a trailing /v1 is the API's, not the server's)."""
    return target.rstrip("/").removesuffix("/v1")


def ssl_context(security: Security) -> ssl.SSLContext | None:
    """None for aiohttp's default (system roots); a context for --tls-ca or a client cert."""
    if security.ca is None and security.cert is None:
        return None
    context = ssl.create_default_context(cafile=None if security.ca is None else str(security.ca))
    if security.cert is not None and security.key is not None:
        context.load_cert_chain(str(security.cert), str(security.key))
    return context


def headers(security: Security) -> dict[str, str]:
    return {"Authorization": f"Bearer {security.token}"} if security.token else {}


def session(security: Security, timeout_s: float) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=0, ssl=ssl_context(security) or True)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    return aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers(security))


async def model_info(targets: Sequence[str], security: Security, timeout_s: float) -> dict:
    """GET /v1/models of every target (one clear error for one that is down or refuses the
    token); the first target's first model, which every request then names."""
    first: dict | None = None
    async with session(security, timeout_s) as http:
        for target in targets:
            url = base_url(target) + MODELS
            try:
                async with http.get(url, server_hostname=security.server_name) as reply:
                    if reply.status in (401, 403):
                        raise LoadTestError(
                            f"{target}: HTTP {reply.status}: {await reply.text()}"
                            " (check --auth-token)"
                        )
                    reply.raise_for_status()
                    data = (await reply.json())["data"]
            except (aiohttp.ClientError, asyncio.TimeoutError, KeyError, IndexError) as e:
                raise TargetUnreachable(
                    f"cannot list the models of {target} within {timeout_s:g}s "
                    f"({type(e).__name__}: {e}; is it an OpenAI-compatible server?)"
                ) from None
            if first is None and data:
                first = data[0]
    if first is None:
        raise LoadTestError(f"{targets[0]}: GET /v1/models lists no model")
    return {"model_name": first.get("id", ""), **first}


def request_body(prompt: Prompt, knobs: Knobs, model: str, index: int, stream: bool) -> dict:
    body: dict = {
        "model": model,
        "max_tokens": prompt.max_new_tokens or knobs.max_new_tokens,
        "temperature": knobs.temperature,
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    if knobs.top_p:
        body["top_p"] = knobs.top_p
    if knobs.stop:
        body["stop"] = list(knobs.stop)
    if knobs.seed is not None:
        body["seed"] = knobs.seed + max(index, 0)
    if knobs.top_k:
        body["top_k"] = knobs.top_k
    if knobs.repetition_penalty:
        body["repetition_penalty"] = knobs.repetition_penalty
    if knobs.ignore_eos:
        body["ignore_eos"] = True
    if prompt.question:
        system = [{"role": "system", "content": prompt.context}] if prompt.context else []
        body["messages"] = [*system, {"role": "user", "content": prompt.text}]
    else:
        body["prompt"] = prompt.text
    return body


@dataclass
class Reading:
    """What one reply said, as it came."""

    arrivals: list[tuple[float, int]]
    completion_tokens: int = 0
    prompt_tokens: int = 0
    finish: str = ""
    error: str = ""
    handed_over: bool | None = None  # kvserve's verdict on a chat answer (None: not sent)
    confidence: float | None = None

    def take(self, chunk: dict, now: float | None) -> None:
        """One JSON chunk (or the whole unary reply, `now` None)."""
        if "error" in chunk:
            error = chunk["error"]
            self.error = error.get("message", str(error)) if isinstance(error, dict) else str(error)
        usage = chunk.get("usage") or {}
        self.completion_tokens = usage.get("completion_tokens") or self.completion_tokens
        self.prompt_tokens = usage.get("prompt_tokens") or self.prompt_tokens
        for choice in chunk.get("choices") or ():
            self.finish = (choice.get("finish_reason") or self.finish or "").upper()
            if "handed_over" in choice:
                self.handed_over = bool(choice["handed_over"])
                confidence = choice.get("confidence")
                self.confidence = float(confidence) if confidence is not None else None
            delta = choice.get("delta") or choice.get("message") or {}
            text = choice.get("text") or delta.get("content") or ""
            if text and now is not None:
                self.arrivals.append((now, 1))


async def _read_stream(reply: aiohttp.ClientResponse, reading: Reading) -> bool:
    """Server-sent events until `data: [DONE]`; False when the stream ended without it."""
    async for line in reply.content:
        now = time.perf_counter()  # first thing: the arrival time is the measurement
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            return True
        reading.take(json.loads(data), now)
    return False


@dataclass(frozen=True)
class HttpSender:
    """Request `index` of a run over HTTP: its prompt and target in turn, sent and measured."""

    http: aiohttp.ClientSession
    targets: Sequence[str]
    workload: Sequence[Prompt]
    knobs: Knobs
    model: str
    security: Security
    unary: bool
    origin: float  # perf_counter at the run start; records' start_s count from here
    id_prefix: str  # x-request-id `<prefix>-<index>` finds the request in the server's log
    worker: int = 0

    async def __call__(self, index: int, scheduled: float) -> RequestRecord:
        prompt = self.workload[index % len(self.workload)]
        slot = index % len(self.targets)
        route = CHAT if prompt.question else COMPLETIONS
        body = request_body(prompt, self.knobs, self.model, index, stream=not self.unary)
        url = base_url(self.targets[slot]) + route
        record = await self._measure(url, route, body, f"{self.id_prefix}-{index}", index)
        record.scheduled_s = scheduled - self.origin
        record.target, record.worker = self.targets[slot], self.worker
        return record

    async def _measure(
        self, url: str, route: str, body: dict, request_id: str, index: int
    ) -> RequestRecord:
        reading, status = Reading([]), OK
        sent = time.perf_counter()
        try:
            async with self.http.post(
                url,
                json=body,
                headers={"x-request-id": request_id},
                server_hostname=self.security.server_name,
            ) as reply:
                if reply.status != 200:
                    status = f"HTTP_{reply.status}"
                    reading.take(await _json_or_text(reply), None)
                elif body["stream"]:
                    if not await _read_stream(reply, reading):
                        status, reading.error = CLIENT_ERROR, "stream ended without [DONE]"
                else:
                    reading.take(await reply.json(), None)
        except asyncio.TimeoutError:
            status, reading.error = "TIMEOUT", "no complete reply within --timeout"
        except aiohttp.ClientConnectionError as e:
            status, reading.error = "CONNECTION_ERROR", f"{type(e).__name__}: {e}"
        except Exception as e:  # recorded, not raised: a load test counts errors
            status, reading.error = CLIENT_ERROR, f"{type(e).__name__}: {e}"
        ended = time.perf_counter()
        if status == OK and reading.error:
            status = "STREAM_ERROR"  # an error event after the 200
        ttft, itl = token_latencies(sent, reading.arrivals) if body["stream"] else (None, [])
        return RequestRecord(
            index=index,
            rpc=route,
            start_s=sent - self.origin,
            e2e_s=ended - sent,
            ttft_s=ttft,
            itl_s=itl,
            output_tokens=reading.completion_tokens or len(reading.arrivals),
            prompt_tokens=reading.prompt_tokens,
            status=status,
            error=reading.error,
            finish_reason=reading.finish,
            handed_over=reading.handed_over if status == OK else None,
            confidence=reading.confidence if status == OK else None,
        )


async def _json_or_text(reply: aiohttp.ClientResponse) -> dict:
    text = await reply.text()
    try:
        body = json.loads(text)
    except ValueError:
        return {"error": text[:200]}
    return body if isinstance(body, dict) else {"error": text[:200]}
