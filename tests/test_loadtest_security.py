"""TLS, mTLS and bearer tokens, client side, against the fake server (the real server's side
comes later). The fake reports the authorization header and the client certificate's name
it saw, so the test checks what went over the wire, not just that the call worked.

Test certificates: fixtures/loadtest/tls (see its README).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtest.cli import main
from tests.support.fake_server import TLS_DIR, FakeServer

TOKEN = "t0ken-for-tests"


@pytest.fixture(scope="module")
def mtls():
    with FakeServer("--mtls", "--token", TOKEN) as server:
        yield server


def run(target: str, tmp_path: Path, *extra: str) -> int:
    args = [
        "--target",
        target,
        "--requests",
        "4",
        "--concurrency",
        "2",
        "--no-progress",
        "--no-html",
        "--connect-timeout",
        "2",
        "--out",
        str(tmp_path),
        *extra,
    ]
    return main(args)


def client_cert() -> list[str]:
    return [
        "--tls-ca",
        str(TLS_DIR / "ca.crt"),
        "--tls-cert",
        str(TLS_DIR / "client.crt"),
        "--tls-key",
        str(TLS_DIR / "client.key"),
    ]


def report(capsys) -> dict:
    out = capsys.readouterr().out.strip().splitlines()
    return json.loads(Path(out[-1].removeprefix("report: ")).read_text())


def test_mtls_and_a_token_file_reach_the_server(mtls, tmp_path, capsys):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    before = mtls.calls()
    assert run(mtls.target, tmp_path, *client_cert(), "--auth-token-file", str(token_file)) == 0
    r = report(capsys)
    assert r["status_counts"] == {"OK": 4}
    facts = mtls.facts()
    assert facts["auth"] == f"Bearer {TOKEN}" and facts["peer"] == "loadtest-client"
    assert int(facts["calls"]) - before == 4
    assert r["config"]["security"]["tls"] is True and r["config"]["security"]["auth"] == "bearer"
    assert TOKEN not in json.dumps(r)  # the secret never lands in a report


def test_token_from_the_environment(mtls, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KVSERVE_AUTH_TOKEN", TOKEN)
    assert run(mtls.target, tmp_path, *client_cert()) == 0
    assert report(capsys)["status_counts"] == {"OK": 4}


@pytest.mark.parametrize("token", [["--auth-token", "wrong"], []])
def test_a_wrong_or_missing_token_is_one_line_and_exit_2(mtls, tmp_path, capsys, token):
    assert run(mtls.target, tmp_path, *client_cert(), *token) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "UNAUTHENTICATED" in err[0] and "--auth-token" in err[0], err


def test_no_client_certificate_cannot_connect(mtls, tmp_path, capsys):
    ca_only = ["--tls-ca", str(TLS_DIR / "ca.crt"), "--auth-token", TOKEN, "--connect-timeout", "1"]
    assert run(mtls.target, tmp_path, *ca_only) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot connect" in err[0] and "TLS" in err[0], err


def test_server_tls_with_a_name_override_and_plaintext_refused(tmp_path, capsys):
    with FakeServer("--tls") as tls:
        ca = ["--tls-ca", str(TLS_DIR / "ca.crt")]
        assert run(tls.target, tmp_path, *ca, "--tls-server-name", "localhost") == 0
        assert report(capsys)["status_counts"] == {"OK": 4}
        assert run(tls.target, tmp_path, "--connect-timeout", "1") == 2  # plaintext: never
        assert "cannot connect" in capsys.readouterr().err


def test_client_helper_speaks_mtls_with_a_token(mtls):
    from loadtest.channels import Security
    from loadtest.client import connect

    security = Security(
        ca=TLS_DIR / "ca.crt", cert=TLS_DIR / "client.crt", key=TLS_DIR / "client.key", token=TOKEN
    )
    with connect(mtls.target, ready_timeout_s=5, security=security) as client:
        text, _ = client.answer("Why?")
        assert text == "answer to Why?" and client.model_info().model_name == "fake"
    assert mtls.facts()["auth"] == f"Bearer {TOKEN}"
