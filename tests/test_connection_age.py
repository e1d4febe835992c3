"""--max-connection-age-seconds: the server closes client connections now and then (GOAWAY),
so clients balancing over a DNS name re-resolve it and meet replicas added since; the calls
themselves go on without an error."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest

from proto import kvserve_pb2 as pb
from proto import kvserve_pb2_grpc as pb_grpc
from server.cli import parse_args
from server.config import grpc_server_options
from tests.support.servers import serving


def test_options_off_by_default_and_in_milliseconds():
    assert grpc_server_options(parse_args(["--model", "m"])) == []
    config = parse_args(["--model", "m", "--max-connection-age-seconds", "300"])
    assert grpc_server_options(config) == [("grpc.max_connection_age_ms", 300_000)]


def test_negative_age_is_a_clear_error(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--model", "m", "--max-connection-age-seconds", "-1"])
    assert "--max-connection-age-seconds must be >= 0" in capsys.readouterr().err


READY = grpc.ChannelConnectivity.READY


@pytest.mark.slow
def test_clients_reconnect_without_errors(tiny_artifact, tmp_path: Path):
    flags = ["--threads", "1", "--max-connection-age-seconds", "0.5"]
    states: list[grpc.ChannelConnectivity] = []
    request = pb.GenerateRequest(prompt="Question: hi\nAnswer:", max_new_tokens=8)
    with (
        serving(tiny_artifact, tmp_path / "server.log", flags) as server,
        grpc.insecure_channel(server.target) as channel,
    ):
        channel.subscribe(states.append, try_to_connect=True)
        stub = pb_grpc.GenerationStub(channel)
        # calls until the channel has connected 3 times (a GOAWAY about every 0.5 s); the cap
        # only ends a server that never sends one
        deadline = time.monotonic() + 30
        calls = 0
        while states.count(READY) < 3 and time.monotonic() < deadline:
            stub.Generate(request, timeout=30)  # any error fails the test
            calls += 1
            time.sleep(0.02)
        channel.unsubscribe(states.append)
    # connected once, then again after each GOAWAY, with every call in between answered
    assert states.count(READY) >= 3 and calls > 3, (states, calls)
