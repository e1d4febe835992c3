"""A random GPT-2 checkpoint for the export tests: 2 layers, a byte-level BPE trained on a
few sentences, saved the way training/ saves one (made in seconds, no training)."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, models

from artifact import PromptTemplate

TEMPLATE = PromptTemplate(question="Q: {question}\nA:")  # not the default: must come through
SENTENCES = [
    "Question: What is the capital of France?\nAnswer: Paris.",
    "Question: Who wrote the play Hamlet?\nAnswer: William Shakespeare.",
    "Context: Spiders are arachnids. All arachnids have eight legs.",
    "The quick brown fox jumps over the lazy dog.",
]
GATE = ["--gate-samples", "6", "--gate-max-new-tokens", "12"]  # a quick gate for tests
# A random model's greedy answers and argmax move with any quantization noise: the
# mechanics are tested here, the default thresholds on a trained model (see the report).
LOOSE = ["--min-token-agreement", "0", "--min-answer-match", "0", "--max-ppl-delta", "1"]


def make_checkpoint(directory: Path) -> Path:
    """A 2-layer GPT-2 with a byte-level BPE trained on a few sentences, saved like training/."""
    import torch
    from tokenizers import decoders, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    eot = "<|endoftext|>"
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=[eot], initial_alphabet=alphabet)
    bpe.train_from_iterator(SENTENCES * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token=eot, bos_token=eot, unk_token=eot, pad_token=eot
    )
    eos = tokenizer.convert_tokens_to_ids(eot)
    config = GPT2Config(
        n_layer=2,
        n_head=2,
        n_embd=64,
        n_positions=128,
        vocab_size=len(tokenizer),
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    TEMPLATE.save(directory)
    return directory
