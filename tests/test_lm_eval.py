"""EleutherAI's lm-evaluation-harness against kvserve's OpenAI door (issue 21's bar).

The harness runs from its own venv (scripts/lm_eval_venv.sh, which `make test` runs first) as
`local-completions`, the way people point it at any OpenAI-compatible server: a small local
JSONL task scored by log-likelihood (echo + logprobs, token-id prompts) and one generated
until a stop string. Each item's log-likelihood must equal HF transformers' on the checkpoint
the artifact was exported from (within 1e-3), and the generated answers HF's greedy ones.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.support.servers import serving

ROOT = Path(__file__).resolve().parents[1]
LM_EVAL = ROOT / "runs" / "venv-lmeval" / "bin" / "lm_eval"
DATA = ROOT / "data" / "support_qa.jsonl"
ITEMS = 6
MAX_GEN = 24

pytestmark = pytest.mark.skipif(
    not LM_EVAL.exists(),
    reason="not installed: lm-evaluation-harness (run scripts/lm_eval_venv.sh; make test does)",
)

TASK = """\
task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: {output_type}
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: " {{{{answer}}}}"
{extra}
"""
LIKELIHOOD = "metric_list:\n  - metric: perplexity\n  - metric: acc\n"
GENERATE = (
    "generation_kwargs:\n  until: ['\\n', '.']\n  max_gen_toks: {max_gen}\n  do_sample: false\n"
    "metric_list:\n  - metric: exact_match\n"
)


def write_tasks(folder: Path) -> list[dict]:
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    items = [r for r in rows if r["split"] == "heldout"][:ITEMS]
    data = folder / "items.jsonl"
    data.write_text("".join(json.dumps(i) + "\n" for i in items))
    for name, kind, extra in (
        ("kvserve_ll", "loglikelihood", LIKELIHOOD),
        ("kvserve_gen", "generate_until", GENERATE.format(max_gen=MAX_GEN)),
    ):
        text = TASK.format(name=name, data=data, output_type=kind, extra=extra)
        (folder / f"{name}.yaml").write_text(text)
    return items


def run_harness(folder: Path, base_url: str, model: str, tokenizer: Path) -> Path:
    out = folder / "out"
    args = [
        str(LM_EVAL),
        "--model",
        "local-completions",
        "--model_args",
        f"model={model},base_url={base_url}/v1/completions,tokenizer_backend=huggingface,"
        f"tokenizer={tokenizer},num_concurrent=2,max_retries=1",
        "--tasks",
        "kvserve_ll,kvserve_gen",
        "--include_path",
        str(folder),
        "--output_path",
        str(out),
        "--log_samples",
        "--batch_size",
        "2",  # a list of 2 token-id prompts per call: kvserve's batches
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OPENAI_API_KEY": "x"}
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600, cwd=folder)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return out


def samples(out: Path, task: str) -> list[dict]:
    (path,) = out.rglob(f"samples_{task}_*.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


def hf_reference(checkpoint: Path, pairs: list[tuple[str, str]], max_new: int):
    """HF log-likelihood of each continuation (encoded as the harness encodes a pair) and
    HF's greedy continuation of each context."""
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    tok = Tokenizer.from_file(str(checkpoint / "tokenizer.json"))
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    likelihoods, greedy = [], []
    with torch.no_grad():
        for context, continuation in pairs:
            whole = tok.encode(context + continuation).ids
            ctx = tok.encode(context).ids
            logits = model(torch.tensor([whole])).logits[0].double()
            logprobs = torch.log_softmax(logits, dim=-1)
            picked = [logprobs[i - 1, whole[i]].item() for i in range(len(ctx), len(whole))]
            likelihoods.append(sum(picked))
            out = model.generate(
                torch.tensor([ctx]), max_new_tokens=max_new, do_sample=False, pad_token_id=0
            )
            greedy.append(tok.decode(out[0, len(ctx) :].tolist()))
    return likelihoods, greedy


@pytest.mark.slow
def test_lm_eval_harness_scores_and_generates_like_hf(tiny_artifact, tiny_checkpoint, tmp_path):
    items = write_tasks(tmp_path)
    log = tmp_path / "server.log"
    with serving(tiny_artifact, log, ["--max-batch-size", "4"], http=True) as server:
        import openai

        client = openai.OpenAI(base_url=f"{server.http_url}/v1", api_key="x", max_retries=0)
        model = client.models.list().data[0].id
        out = run_harness(tmp_path, server.http_url, model, tiny_checkpoint)
    scored = sorted(samples(out, "kvserve_ll"), key=lambda s: s["doc_id"])
    generated = sorted(samples(out, "kvserve_gen"), key=lambda s: s["doc_id"])
    assert len(scored) == len(generated) == len(items)
    args = [s["arguments"]["gen_args_0"] for s in scored]
    pairs = [(a["arg_0"], a["arg_1"]) for a in args]
    likelihoods, greedy = hf_reference(tiny_checkpoint, pairs, MAX_GEN)
    ours = [float(s["resps"][0][0][0]) for s in scored]  # the log keeps them as text
    assert np.allclose(ours, likelihoods, atol=1e-3), (ours, likelihoods)
    assert all(value < 0 for value in ours)
    for sample, reference in zip(generated, greedy, strict=True):
        text = sample["resps"][0][0]
        cut = min((i for i in (reference.find("\n"), reference.find(".")) if i >= 0), default=None)
        assert text == reference[:cut], (text, reference)
