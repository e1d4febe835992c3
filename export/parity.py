"""Does the ONNX graph compute what the PyTorch checkpoint computes?

For a few prompts built from the checkpoint's own template: greedy decoding through the
server's own runner (ONNX Runtime, slot KV cache) against `model.generate(do_sample=False)`,
with the max abs difference of the next-token logits at every step where both saw the same
context.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from export.checkpoint import Checkpoint
from server.runner import OnnxRunner, RunnerConfig

PROVIDER = "CPUExecutionProvider"
MAX_NEW_TOKENS = 16
FP32_MAX_LOGIT_DIFF = 1e-3
# (question, context): fixed, so reports are comparable across exports; one uses the
# context template, since `Answer` serves both.
QUESTIONS = (
    ("What is the capital of France?", ""),
    ("Who wrote the play Hamlet?", ""),
    ("How many legs does a spider have?", "Spiders are arachnids. All arachnids have eight legs."),
)


@dataclass(frozen=True)
class PromptResult:
    prompt: str
    prompt_tokens: int
    max_logit_diff: float
    ort_tokens: list[int]
    torch_tokens: list[int]

    @property
    def matched(self) -> int:
        """Leading generated tokens that agree (after the first miss the contexts differ)."""
        n = 0
        for a, b in zip(self.ort_tokens, self.torch_tokens, strict=False):
            if a != b:
                break
            n += 1
        return n

    @property
    def compared(self) -> int:
        return max(len(self.ort_tokens), len(self.torch_tokens), 1)


@dataclass(frozen=True)
class ParityReport:
    provider: str
    max_new_tokens: int
    results: list[PromptResult]

    @property
    def max_logit_diff(self) -> float:
        return max(r.max_logit_diff for r in self.results)

    @property
    def greedy_match_fraction(self) -> float:
        return sum(r.matched for r in self.results) / sum(r.compared for r in self.results)

    def to_dict(self) -> dict:
        """The manifest's `parity` section."""
        return {
            "max_logit_diff": self.max_logit_diff,
            "greedy_match_fraction": self.greedy_match_fraction,
            "prompts": [r.prompt for r in self.results],
            "provider": self.provider,
            "max_new_tokens": self.max_new_tokens,
            "per_prompt": [{**asdict(r), "matched": r.matched} for r in self.results],
        }


def fp32_failures(report: ParityReport) -> list[str]:
    """Why an fp32 graph is not a faithful copy of the checkpoint (empty: it is)."""
    failures = []
    if report.max_logit_diff > FP32_MAX_LOGIT_DIFF:
        failures.append(f"max logit diff {report.max_logit_diff:.2e} > {FP32_MAX_LOGIT_DIFF:g}")
    if report.greedy_match_fraction < 1.0:
        failures.append(f"greedy tokens differ (match {report.greedy_match_fraction:.3f})")
    return failures


def check_parity(
    model: Path, checkpoint: Checkpoint, max_new_tokens: int = MAX_NEW_TOKENS
) -> ParityReport:
    """Run every prompt through ONNX Runtime and PyTorch; report how far apart they are."""
    import torch
    from tokenizers import Tokenizer
    from transformers import GPT2LMHeadModel

    runner = OnnxRunner(model, checkpoint.architecture, "float32", RunnerConfig("cpu"))
    torch_model = GPT2LMHeadModel.from_pretrained(checkpoint.path, dtype=torch.float32).eval()
    tokenizer = Tokenizer.from_file(str(checkpoint.tokenizer_file))  # as the server tokenizes
    results = []
    for question, context in tqdm(QUESTIONS, desc="parity", unit="prompt", disable=None):
        prompt = checkpoint.prompt_template.format(question, context)
        ids = _prompt_ids(tokenizer, prompt, checkpoint, max_new_tokens)
        ort_logits, ort_tokens = _ort_greedy(runner, ids, checkpoint, max_new_tokens)
        torch_logits, torch_tokens = _torch_greedy(torch_model, ids, checkpoint, max_new_tokens)
        steps = min(len(ort_logits), len(torch_logits))  # the same contexts while tokens agree
        diff = float(np.max(np.abs(ort_logits[:steps] - torch_logits[:steps])))
        results.append(PromptResult(prompt, len(ids), diff, ort_tokens, torch_tokens))
    return ParityReport(PROVIDER, max_new_tokens, results)


def _prompt_ids(tokenizer, prompt: str, checkpoint: Checkpoint, max_new_tokens: int) -> list[int]:
    room = checkpoint.architecture.max_positions - max_new_tokens
    return tokenizer.encode(prompt).ids[-room:]  # keep the end: it holds "Answer:"


def _ort_greedy(runner, ids: list[int], ckpt: Checkpoint, max_new: int):
    """Logits of every step [steps, V] and up to `max_new` greedy tokens, through the
    server's own runner (slot cache, in-place KV), so the check covers what is served."""
    cache = runner.new_cache(max_rows=1)
    logits = runner.prefill(cache, [ids])[0]
    steps, tokens = [logits], []
    for _ in range(max_new):
        token = int(np.argmax(steps[-1]))
        tokens.append(token)
        if token == ckpt.eos_token_id or len(tokens) == max_new:
            break
        steps.append(runner.decode(cache, np.array([token], dtype=np.int64))[0])
    return np.stack(steps).astype(np.float32), tokens


def _torch_greedy(model, ids: list[int], ckpt: Checkpoint, max_new: int):
    import torch
    from transformers import GenerationConfig

    # An explicit config: the checkpoint's generation_config.json may carry sampling settings.
    config = GenerationConfig(
        do_sample=False,
        num_beams=1,
        max_new_tokens=max_new,
        bos_token_id=model.config.bos_token_id,  # else generate() warns it filled it in
        eos_token_id=ckpt.eos_token_id,
        pad_token_id=ckpt.pad_token_id,
    )
    config.output_scores = config.return_dict_in_generate = True
    input_ids = torch.tensor([ids], dtype=torch.long)
    with torch.no_grad():
        out = model.generate(
            input_ids, attention_mask=torch.ones_like(input_ids), generation_config=config
        )
    logits = torch.stack(out.scores)[:, 0].numpy()  # [steps, V]: each step's next-token logits
    return logits, out.sequences[0, len(ids) :].tolist()


def format_table(report: ParityReport) -> str:
    """A small plain-text table: one row per prompt, then the totals."""
    rows = [("prompt", "tokens", "max |dlogit|", "greedy match")]
    for r in report.results:
        short = r.prompt.replace("\n", " ")
        short = short if len(short) <= 44 else short[:41] + "..."
        rows.append(
            (short, str(r.prompt_tokens), f"{r.max_logit_diff:.2e}", f"{r.matched}/{r.compared}")
        )
    rows.append(("all", "", f"{report.max_logit_diff:.2e}", f"{report.greedy_match_fraction:.3f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.insert(len(lines) - 1, lines[1])
    return "\n".join(lines)
