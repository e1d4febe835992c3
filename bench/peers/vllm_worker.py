"""vLLM (CPU build) on the peer workload, under runs/venv-vllm (see worker_io for the protocol).

The offline engine, fed token ids: every request is added before the first step, then
`step()` runs until none is left; each step's new tokens are timed as they come back (what
`LLM.generate` does inside, minus the timing). Options: dtype (float32, bfloat16).
The launcher sets the environment vLLM's CPU guide asks for (LD_PRELOAD, thread binding,
KV cache space) before this process starts.
"""

from __future__ import annotations

import itertools

import vllm
from vllm import LLM, SamplingParams
from vllm.inputs import TokensPrompt
from vllm.sampling_params import RequestOutputKind
from worker_io import Arrivals, WorkerResult, Workload, worker_main

MAX_MODEL_LEN = 1024  # GPT-2's context window
ids = itertools.count()


def load(work: Workload) -> LLM:
    return LLM(
        model=work.model,
        dtype=work.options["dtype"],
        max_model_len=MAX_MODEL_LEN,
        max_num_seqs=work.max_batch,
        seed=0,
        # off: these prompts share no prefixes beyond the warm-up request's, so a prefix
        # cache would only cost its hashing (kvserve keeps its own on, its default)
        enable_prefix_caching=False,
    )


def generate(llm: LLM, work: Workload) -> WorkerResult:
    engine = llm.llm_engine
    clock = Arrivals(len(work.prompts))
    index: dict[str, int] = {}
    clock.hand_over()
    for i, (prompt, n) in enumerate(zip(work.prompts, work.new_tokens, strict=True)):
        request_id = str(next(ids))
        params = SamplingParams(
            max_tokens=n,
            min_tokens=n,
            ignore_eos=True,
            temperature=0.0,
            output_kind=RequestOutputKind.DELTA,  # each output holds only the new tokens
        )
        # outputs carry the id given here; add_request returns an internal one
        index[request_id] = i
        engine.add_request(request_id, TokensPrompt(prompt_token_ids=prompt), params)
    while engine.has_unfinished_requests():
        for output in engine.step():
            clock.add(index[output.request_id], len(output.outputs[0].token_ids))
    return clock.result(f"vllm {vllm.__version__}")


if __name__ == "__main__":
    raise SystemExit(worker_main(load, generate))
