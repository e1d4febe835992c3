"""Issue 21's agreement bar through both doors: on the fp32 tiny artifact, the logprobs the
OpenAI door (`echo` + `logprobs`, read by the `openai` SDK) and the gRPC door
(`prompt_logprobs` + `logprobs`) return for every prompt token and 32 greedy tokens equal HF
transformers' log-softmax on the checkpoint the artifact was exported from, within 1e-4.
"""

from __future__ import annotations

import grpc
import openai
import pytest
from tokenizers import Tokenizer

from artifact import read_manifest
from proto import kvserve_pb2 as pb
from proto import kvserve_pb2_grpc as pb_grpc
from server.process import ServerProcess
from tests.support.hf import PROMPTS, hf_logprobs

pytestmark = pytest.mark.slow
NEW_TOKENS = 32
TOP = 5


@pytest.fixture(scope="module")
def server(tiny_artifact, tmp_path_factory):
    log = tmp_path_factory.mktemp("hf-doors") / "server.log"
    process = ServerProcess.start(tiny_artifact, log, ["--max-batch-size", "8"], http=True)
    yield process
    assert process.stop() == 0, log.read_text()[-3000:]


def test_both_doors_return_hf_logprobs(server, tiny_artifact, tiny_checkpoint):
    tokenizer = Tokenizer.from_file(str(tiny_artifact / "tokenizer.json"))
    model = read_manifest(tiny_artifact).model_name
    client = openai.OpenAI(base_url=f"{server.http_url}/v1", api_key="x", max_retries=0)
    worst = {"http": 0.0, "grpc": 0.0}
    with grpc.insecure_channel(server.target) as channel:
        stub = pb_grpc.GenerationStub(channel)
        for prompt in PROMPTS:
            request = pb.GenerateRequest(
                prompt=prompt,
                max_new_tokens=NEW_TOKENS,
                ignore_eos=True,
                logprobs=TOP,
                prompt_logprobs=TOP,
            )
            reply = stub.Generate(request)
            prompt_ids = tokenizer.encode(prompt).ids
            ids = prompt_ids + list(reply.token_ids)
            assert len(reply.token_ids) == NEW_TOKENS
            (reference,) = hf_logprobs(tiny_checkpoint, [ids])
            # gRPC: prompt_logprobs[i] scores prompt token i (the first has no logprob)
            entries = list(reply.prompt_logprobs)[1:] + list(reply.logprobs)
            assert not reply.prompt_logprobs[0].HasField("logprob")
            assert len(entries) == len(ids) - 1
            for i, entry in enumerate(entries):
                assert entry.token_id == ids[i + 1]
                row = reference[i]
                worst["grpc"] = max(worst["grpc"], abs(entry.logprob - row[entry.token_id]))
                for alternative in entry.alternatives:
                    worst["grpc"] = max(
                        worst["grpc"], abs(alternative.logprob - row[alternative.token_id])
                    )
            # HTTP: echo + logprobs through the openai SDK: entry i scores token i
            completion = client.completions.create(
                model=model,
                prompt=prompt,
                max_tokens=NEW_TOKENS,
                temperature=0,
                logprobs=TOP,
                echo=True,
                extra_body={"ignore_eos": True},
            )
            lps = completion.choices[0].logprobs
            assert lps.token_logprobs[0] is None and len(lps.token_logprobs) == len(ids)
            for i, value in enumerate(lps.token_logprobs[1:]):
                row = reference[i]
                worst["http"] = max(worst["http"], abs(value - row[ids[i + 1]]))
    print(f"\nlargest |logprob - HF| over {len(PROMPTS)} prompts + {NEW_TOKENS} tokens: {worst}")
    assert worst["http"] < 1e-4 and worst["grpc"] < 1e-4, worst
