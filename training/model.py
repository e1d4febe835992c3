"""Where the model and tokenizer come from: a tiny GPT-2 built from scratch, or a pretrained one.

Either way the result has eos and pad ids set (pad = eos, as GPT-2 has no pad token), in the
tokenizer, the model config and the generation config, so export and serving can read them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from transformers import (
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerBase,
)

from artifact import PromptTemplate
from training.errors import InputError
from training.examples import QAExample
from training.formatting import prompt_text, target_text
from training.presets import TinyModel
from training.tokenizer import train_bpe_tokenizer

TINY = "tiny"


class ModelLoadError(InputError):
    """The --base model or tokenizer could not be loaded; one line, names the source."""


@dataclass
class ModelBundle:
    model: GPT2LMHeadModel
    tokenizer: PreTrainedTokenizerBase
    source: str  # "tiny" or the path / hub id it was loaded from


def load_model(
    base: str, examples: list[QAExample], template: PromptTemplate, spec: TinyModel
) -> ModelBundle:
    """`base == "tiny"`: build from scratch (tokenizer trained on `examples`); else load it."""
    bundle = build_tiny(examples, template, spec) if base == TINY else load_pretrained(base)
    _tie_pad_to_eos(bundle)
    # transformers picks the loss from the class name, and "GPT2LMHeadModel" names none: it
    # warns, then uses the causal-LM loss. Name that loss so it needs no warning.
    bundle.model.loss_type = "ForCausalLM"
    return bundle


def build_tiny(examples: list[QAExample], template: PromptTemplate, spec: TinyModel) -> ModelBundle:
    # Train the tokenizer on exactly the texts the model trains on (train rows and their
    # augmentation, never heldout rows), the template's fixed words included. Every rank
    # builds the same one (deterministic).
    texts = [prompt_text(template, e) + target_text(e) for e in examples]
    tokenizer = train_bpe_tokenizer(texts, spec.vocab_size, spec.n_positions)
    eos = tokenizer.eos_token_id
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=spec.n_positions,
        n_embd=spec.n_embd,
        n_layer=spec.n_layer,
        n_head=spec.n_head,
        resid_pdrop=spec.dropout,
        embd_pdrop=spec.dropout,
        attn_pdrop=spec.dropout,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    return ModelBundle(GPT2LMHeadModel(config), tokenizer, TINY)


def load_pretrained(path_or_id: str) -> ModelBundle:
    local = Path(path_or_id).expanduser()
    if local.exists() and not (local / "config.json").is_file():
        raise ModelLoadError(f"--base {path_or_id}: no config.json (not an HF checkpoint dir)")
    source = str(local) if local.exists() else path_or_id  # else: a hub id
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = GPT2LMHeadModel.from_pretrained(source)
    except Exception as e:  # hub, IO and parse errors all mean "cannot load"
        # from_pretrained's messages run to paragraphs; keep the first line.
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"--base {path_or_id}: cannot load model ({first})") from None
    if not tokenizer.is_fast:
        raise ModelLoadError(f"--base {path_or_id}: needs a fast tokenizer (tokenizer.json)")
    return ModelBundle(model, tokenizer, path_or_id)


def _tie_pad_to_eos(bundle: ModelBundle) -> None:
    tok, model = bundle.tokenizer, bundle.model
    if tok.eos_token_id is None:
        raise ModelLoadError(f"--base {bundle.source}: tokenizer has no eos token")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    for config in (model.config, model.generation_config):
        config.eos_token_id = tok.eos_token_id
        config.pad_token_id = tok.pad_token_id
