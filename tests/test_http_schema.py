"""Property-based tests of the HTTP door from its own OpenAPI schema (schemathesis).

Requests drawn from `/openapi.json` (valid ones and, in negative mode, ones that break it)
go to a real server on loopback. Every response must be documented: no 5xx, a documented
status and content type, a body that matches its schema, and schema-breaking input refused
with a 4xx.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from server.process import ServerProcess

pytestmark = pytest.mark.slow
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
EXAMPLES = 100  # per operation and generation mode: the whole run stays well under a minute
CASES: list[str] = []  # one entry per request sent, for the closing count
STATUSES: Counter = Counter()


@pytest.fixture(autouse=True)
def ieee_floats():
    """ONNX Runtime sessions made earlier in this process (other tests) leave this thread's
    FPU treating subnormals as zero, and hypothesis then refuses to draw the schema's floats
    at all; the cases run in the default floating-point environment, the old one put back
    after (FE_DFL_ENV is glibc's (const fenv_t *) -1)."""
    libm = ctypes.CDLL(ctypes.util.find_library("m"))
    saved = ctypes.create_string_buffer(64)  # fenv_t: 32 bytes on x86-64
    libm.fegetenv(saved)
    libm.fesetenv(ctypes.c_void_p(-1))
    yield
    libm.fesetenv(saved)


@pytest.fixture(scope="module")
def server(tiny_artifact, tmp_path_factory):
    log = tmp_path_factory.mktemp("schema") / "server.log"
    # a small default and limit: drawn max_tokens values stay cheap to generate on CPU
    extra = [
        "--max-batch-size",
        "8",
        "--default-max-new-tokens",
        "4",
        "--max-new-tokens-limit",
        "16",
    ]
    process = ServerProcess.start(tiny_artifact, log, extra, http=True)
    yield process
    assert process.stop() == 0, log.read_text()[-3000:]


@pytest.fixture(scope="module")
def api_schema(server):
    return schemathesis.openapi.from_url(f"{server.http_url}/openapi.json")


GETS = [("GET", "/health"), ("GET", "/v1/models")]  # no inputs: nothing to break
POSTS = [("POST", "/v1/completions"), ("POST", "/v1/chat/completions")]
RUNS = [(*op, GenerationMode.POSITIVE) for op in GETS + POSTS] + [
    (*op, GenerationMode.NEGATIVE) for op in POSTS
]


# schemathesis' own pytest plugin reads a pytest internal that pytest 9 removed, so each
# operation's strategy is driven by hypothesis directly (schemathesis' documented way)
@pytest.mark.parametrize(
    ("method", "path", "mode"), RUNS, ids=[f"{m}-{p}-{g.value}" for m, p, g in RUNS]
)
def test_every_response_is_documented_and_none_is_a_server_error(api_schema, method, path, mode):
    strategy = api_schema[path][method].as_strategy(generation_mode=mode)

    @given(case=strategy)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def one(case):
        CASES.append(f"{case.method} {case.path}")
        response = case.call_and_validate(checks=CHECKS, timeout=30)
        STATUSES[response.status_code] += 1

    one()


def test_the_schema_cases_covered_every_operation(server):
    print(
        f"\nschemathesis: {len(CASES)} cases over {len(set(CASES))} operations, "
        f"statuses {dict(sorted(STATUSES.items()))}"
    )
    assert STATUSES[200] > 0 and STATUSES[400] > 0  # valid requests answered, bad ones refused
    assert set(CASES) == {f"{method} {path}" for method, path in GETS + POSTS}
    posts = [c for c in CASES if c.startswith("POST")]
    assert len(posts) >= 2 * len(POSTS) * EXAMPLES  # both modes ran their examples
    assert server.process.poll() is None
