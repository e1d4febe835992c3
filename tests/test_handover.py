"""The hand-over (server/handover.py): the verdict on an answer from its token logprobs, the
threshold's checks, the serve options that set it, the metrics that count it, and the
verdict through a real server's two doors (Answer RPC, chat completions with the real
`openai` client)."""

from __future__ import annotations

import logging
import math
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from artifact import Architecture, Calibration, Manifest, PromptTemplate, read_manifest
from proto import kvserve_pb2 as pb
from proto import kvserve_pb2_grpc as pb_grpc
from server import cli as server_cli
from server.app import hand_over
from server.config import ServeConfig
from server.handover import (
    DEFAULT_TEXT,
    NO_VERDICT,
    HandOver,
    Verdict,
    answer_logprobs,
    check_threshold,
)
from server.metrics import Metrics
from server.validation import InvalidArgument
from tests.support.handover import UNDER_A_HALF, calibrated_copy
from tests.support.servers import serving

ROOT = Path(__file__).resolve().parents[1]
# sigmoid(4 * mean + 4): 0.5 at a mean logprob of -1, 0.88 at -0.5, 0.12 at -1.5
CURVE = Calibration(a=4.0, b=4.0, threshold=0.6, extra={"n": 50, "fitted_on": "validation"})
# the feature training picks on the bundled data: sigmoid(a * log(max(-mean, 1e-6)) + b)
LOG_CURVE = Calibration(
    a=-0.66, b=-3.5, threshold=0.42, feature="log_neg_mean_logprob", extra={"n": 189}
)


def sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


# --- the verdict ----------------------------------------------------------------------------


def test_confidence_is_the_calibrated_mean_token_logprob() -> None:
    verdict = HandOver(CURVE).judge([-0.2, -0.8])  # mean -0.5
    assert verdict.confidence == pytest.approx(sigmoid(4 * -0.5 + 4))
    assert verdict == Verdict(CURVE.confidence([-0.2, -0.8]), handed_over=False)


def test_the_log_feature_is_judged_by_its_formula() -> None:
    handover = HandOver(LOG_CURVE)
    sure = handover.judge([-0.0002, -0.0006])  # mean -0.0004: sigmoid(1.66) = 0.84
    assert sure.confidence == pytest.approx(sigmoid(-0.66 * math.log(0.0004) - 3.5))
    assert not sure.handed_over
    unsure = handover.judge([-0.05])  # sigmoid(-1.52) = 0.18 < 0.42
    assert unsure.confidence == pytest.approx(sigmoid(-0.66 * math.log(0.05) - 3.5))
    assert unsure.handed_over
    assert handover.judge([]) == Verdict(0.0, handed_over=True)  # no tokens: confidence 0


def test_below_the_manifests_threshold_is_handed_over_at_or_above_it_answered() -> None:
    handover = HandOver(CURVE)
    assert handover.threshold == CURVE.threshold
    assert handover.judge([-1.5]).handed_over  # 0.12 < 0.6
    assert not handover.judge([-0.5]).handed_over  # 0.88
    # exactly at the threshold counts as answered (training's "confidence >= threshold")
    at = math.log(0.6 / 0.4) / 4 - 1  # mean logprob whose confidence is 0.6
    exact = Calibration(a=4.0, b=4.0, threshold=CURVE.confidence([at]))
    assert not HandOver(exact).judge([at]).handed_over


def test_server_threshold_beats_the_manifests_and_a_requests_beats_both() -> None:
    server = HandOver(CURVE, threshold=0.1)
    assert server.threshold == 0.1
    assert not server.judge([-1.5]).handed_over  # 0.12 >= 0.1
    assert server.judge([-1.5], threshold=0.5).handed_over
    assert not HandOver(CURVE).judge([-1.5], threshold=0.1).handed_over


def test_zero_never_hands_over_and_one_always_does() -> None:
    never, always = HandOver(CURVE, threshold=0.0), HandOver(CURVE, threshold=1.0)
    for logprobs in ([-30.0], [-0.0001], [], [0.0] * 3):
        assert not never.judge(logprobs).handed_over
        assert always.judge(logprobs).handed_over
    # sigmoid rounds to exactly 1.0 for a sure answer on a steep curve: still handed over at 1
    steep = Calibration(a=100.0, b=50.0, threshold=0.5)
    assert steep.confidence([-0.0]) == 1.0
    assert HandOver(steep, threshold=1.0).judge([-0.0]).handed_over


def test_an_answer_without_tokens_has_confidence_zero() -> None:
    assert HandOver(CURVE).judge([]) == Verdict(0.0, handed_over=True)


def test_an_artifact_without_calibration_never_hands_over() -> None:
    handover = HandOver(None, threshold=1.0)
    assert not handover.enabled and handover.threshold == 1.0
    assert handover.judge([-9.0]) == NO_VERDICT == Verdict(None, False)
    assert handover.judge([-9.0], threshold=1.0) == NO_VERDICT
    assert HandOver(None).threshold is None and HandOver(None).text == DEFAULT_TEXT


@pytest.mark.parametrize("value", [0, 0.0, 0.25, 1, 1.0])
def test_check_threshold_takes_zero_to_one(value: float) -> None:
    assert check_threshold(value, "handover_threshold") == float(value)


@pytest.mark.parametrize("value", [-0.01, 1.0001, 2, math.nan, math.inf, -math.inf, "0.5", True])
def test_check_threshold_names_the_field(value: object) -> None:
    with pytest.raises(InvalidArgument) as error:
        check_threshold(value, "handover_threshold")  # type: ignore[arg-type]
    assert error.value.field == "handover_threshold"
    assert str(error.value).startswith("handover_threshold: must be")


def test_a_bad_server_threshold_is_refused_when_built() -> None:
    with pytest.raises(InvalidArgument, match="handover_threshold"):
        HandOver(CURVE, threshold=1.5)


def test_answer_logprobs_leave_out_the_eos_token() -> None:
    assert answer_logprobs([5, 7, 0], [-0.1, -0.2, -0.01], eos_token_id=0) == [-0.1, -0.2]
    assert answer_logprobs([], [], eos_token_id=0) == []
    with pytest.raises(ValueError, match="2 tokens but 1 logprobs"):
        answer_logprobs([1, 2], [-0.1], eos_token_id=0)


# --- metrics --------------------------------------------------------------------------------


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels or None)
    return 0.0 if value is None else value


def test_observe_answer_counts_hand_overs_and_records_each_confidence() -> None:
    metrics = Metrics()
    for verdict in (Verdict(0.3, True), Verdict(0.92, False), Verdict(0.04, True), NO_VERDICT):
        metrics.observe_answer(verdict)
    assert sample(metrics, "kvserve_handovers_total") == 2
    assert sample(metrics, "kvserve_answer_confidence_count") == 3  # NO_VERDICT: no number
    assert sample(metrics, "kvserve_answer_confidence_sum") == pytest.approx(0.3 + 0.92 + 0.04)
    assert sample(metrics, "kvserve_answer_confidence_bucket", le="0.05") == 1
    assert sample(metrics, "kvserve_answer_confidence_bucket", le="0.3") == 2
    assert sample(metrics, "kvserve_answer_confidence_bucket", le="0.9") == 2
    assert sample(metrics, "kvserve_answer_confidence_bucket", le="1.0") == 3


def test_the_series_exist_before_any_answer() -> None:
    metrics = Metrics()
    assert metrics.registry.get_sample_value("kvserve_handovers_total") == 0.0
    assert metrics.registry.get_sample_value("kvserve_answer_confidence_count") == 0.0


# --- serve options --------------------------------------------------------------------------


def test_options_default_to_the_manifests_threshold_and_the_default_text() -> None:
    config = server_cli.parse_args(["--model", "m"])
    assert (config.handover_threshold, config.handover_text) == (None, DEFAULT_TEXT)


def test_options_from_flags_and_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    config = server_cli.parse_args(
        ["--model", "m", "--handover-threshold", "0.35", "--handover-text", "Ask Ana."]
    )
    assert (config.handover_threshold, config.handover_text) == (0.35, "Ask Ana.")
    monkeypatch.setenv("KVSERVE_HANDOVER_THRESHOLD", "0")
    monkeypatch.setenv("KVSERVE_HANDOVER_TEXT", "A person will reply.")
    config = server_cli.parse_args(["--model", "m"])
    assert (config.handover_threshold, config.handover_text) == (0.0, "A person will reply.")


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--handover-threshold", "1.5"], "--handover-threshold must be between 0 and 1"),
        (["--handover-threshold", "-0.1"], "--handover-threshold must be between 0 and 1"),
        (["--handover-threshold", "nan"], "--handover-threshold must be between 0 and 1"),
        (["--handover-threshold", "high"], "argument --handover-threshold: invalid float value"),
        (["--handover-text", "  "], "--handover-text must not be empty"),
    ],
)
def test_bad_options_are_one_line_naming_the_option(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        server_cli.main(["--model", "m", *argv])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.startswith("kvserve-serve: error: ") and err.count("\n") == 1 and says in err


def test_the_real_command_refuses_a_bad_variable_without_a_traceback() -> None:
    env = {"PATH": "/usr/bin:/bin", "KVSERVE_HANDOVER_THRESHOLD": "2"}
    out = subprocess.run(
        [sys.executable, "-m", "server", "--model", "m"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (out.returncode, out.stdout) == (2, "")
    assert out.stderr == (
        "kvserve-serve: error: --handover-threshold must be between 0 and 1 (0 = never hand "
        "over, 1 = always), got 2.0 (see --help)\n"
    )


def test_help_explains_both_options(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "300")
    with pytest.raises(SystemExit):
        server_cli.parse_args(["--help"])
    out = capsys.readouterr().out
    assert "--handover-threshold P" in out and "(env KVSERVE_HANDOVER_THRESHOLD)" in out
    assert "0 = never hand over, 1 = always" in out
    assert f"(default: {DEFAULT_TEXT}; env KVSERVE_HANDOVER_TEXT)" in out


# --- the server's policy --------------------------------------------------------------------


def manifest(confidence: Calibration | None) -> Manifest:
    return Manifest(
        model_name="m",
        architecture=Architecture(1, 1, 8, 8, 10, 32),
        inputs=[],
        outputs=[],
        dtype="float32",
        quantization="none",
        validated_providers=["cpu"],
        prompt_template=PromptTemplate(),
        eos_token_id=0,
        pad_token_id=0,
        confidence=confidence,
    )


def test_the_server_takes_the_manifests_calibration_and_its_options() -> None:
    config = ServeConfig(model=Path("m"), handover_text="Ask Ana.")
    handover = hand_over(config, manifest(CURVE))
    assert (handover.calibration, handover.threshold, handover.text) == (CURVE, 0.6, "Ask Ana.")
    handover = hand_over(ServeConfig(model=Path("m"), handover_threshold=0.0), manifest(CURVE))
    assert handover.threshold == 0.0 and not handover.judge([-30.0]).handed_over


def test_a_threshold_for_an_artifact_without_calibration_is_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="kvserve.server"):
        handover = hand_over(ServeConfig(model=Path("m"), handover_threshold=0.5), manifest(None))
    assert handover.judge([-9.0]) == NO_VERDICT
    assert "has no confidence calibration" in caplog.text


# --- through the real server's two doors ----------------------------------------------------

HANDOVER_TEXT = "Ana from support will reply within the hour."


@pytest.fixture(scope="module")
def served_calibrated(tiny_artifact, tmp_path_factory):
    folder = tmp_path_factory.mktemp("handover")
    artifact = calibrated_copy(tiny_artifact, folder / "artifact", UNDER_A_HALF)
    options = ["--handover-text", HANDOVER_TEXT]
    with serving(artifact, folder / "server.log", options, http=True) as server:
        yield server, artifact


@pytest.mark.slow
def test_the_answer_rpc_judges_with_the_manifests_curve(served_calibrated) -> None:
    server, artifact = served_calibrated
    with grpc.insecure_channel(server.target) as channel:
        stub = pb_grpc.GenerationStub(channel)
        ask = dict(question="How do I reset my password?", max_new_tokens=16, logprobs=0)
        default = stub.Answer(pb.AnswerRequest(**ask))
        always = stub.Answer(pb.AnswerRequest(**ask, handover_threshold=1.0))
        never = stub.Answer(pb.AnswerRequest(**ask, handover_threshold=0.0))
        with pytest.raises(grpc.RpcError) as error:
            stub.Answer(pb.AnswerRequest(**ask, handover_threshold=1.5))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "handover_threshold" in error.value.details()
    # the server's number is artifact/confidence.py's on the answer's logprobs, eos left out
    eos = read_manifest(artifact).eos_token_id
    tokens = [lp.token_id for lp in never.logprobs]
    logprobs = answer_logprobs(tokens, [lp.logprob for lp in never.logprobs], eos)
    expected = UNDER_A_HALF.confidence(logprobs)
    for reply in (default, always, never):
        assert reply.HasField("confidence")
        assert reply.confidence == pytest.approx(expected, rel=1e-5)  # a float on the wire
        assert list(reply.token_ids) == tokens  # the guess's tokens stay in the reply
    assert default.handed_over == (expected < UNDER_A_HALF.threshold)  # the manifest's
    assert always.handed_over and always.text == HANDOVER_TEXT
    assert not never.handed_over and never.text != HANDOVER_TEXT and never.text.strip()


@pytest.mark.slow
def test_the_server_evaluates_the_log_feature_from_the_manifest(tiny_artifact, tmp_path) -> None:
    artifact = calibrated_copy(tiny_artifact, tmp_path / "artifact", LOG_CURVE)
    ask = pb.AnswerRequest(question="How do I reset my password?", max_new_tokens=16, logprobs=0)
    with (
        serving(artifact, tmp_path / "server.log") as server,
        grpc.insecure_channel(server.target) as channel,
    ):
        reply = pb_grpc.GenerationStub(channel).Answer(ask)
    eos = read_manifest(artifact).eos_token_id
    tokens = [lp.token_id for lp in reply.logprobs]
    logprobs = answer_logprobs(tokens, [lp.logprob for lp in reply.logprobs], eos)
    assert logprobs  # the formula by hand, not through the evaluator under test
    mean = sum(logprobs) / len(logprobs)
    expected = sigmoid(-0.66 * math.log(max(-mean, 1e-6)) - 3.5)
    assert reply.confidence == pytest.approx(expected, rel=1e-5)
    assert reply.handed_over == (expected < LOG_CURVE.threshold)


@pytest.mark.slow
def test_chat_and_answer_give_one_question_the_same_confidence(served_calibrated) -> None:
    from openai import OpenAI

    server, _ = served_calibrated
    question = "Where is my order?"
    with grpc.insecure_channel(server.target) as channel:
        answer = pb_grpc.GenerationStub(channel).Answer(
            pb.AnswerRequest(question=question, max_new_tokens=16, handover_threshold=1.0)
        )
    client = OpenAI(base_url=f"{server.http_url}/v1", api_key="unused")
    reply = client.chat.completions.create(
        model=client.models.list().data[0].id,
        messages=[{"role": "user", "content": question}],
        max_tokens=16,
        temperature=0,
        extra_body={"handover_threshold": 1.0},
    )
    choice = reply.choices[0].model_dump()
    assert choice["handed_over"] is True and choice["message"]["content"] == HANDOVER_TEXT
    assert choice["confidence"] == pytest.approx(answer.confidence, rel=1e-5)
    assert answer.handed_over and answer.text == HANDOVER_TEXT
