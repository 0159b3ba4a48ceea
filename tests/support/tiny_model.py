"""A tiny random Llama-style causal LM and its tokenizer, saved as a local model directory.

Built from a config (no download): a byte-level BPE tokenizer trained on a built-in corpus, with a
chat template, and a randomly initialised LlamaForCausalLM. Loading it goes through the same
`from_pretrained` code a user's real model directory does.
"""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>{{ message['content'] }}<|end|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

SPECIAL_TOKENS = ["<s>", "</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>", "<|tool|>", "<|end|>"]

CORPUS = [
    "Alice adopted a grey cat named Pixel in March and takes it to the vet every spring.",
    "Bob moved to Lisbon for a job at a robotics company; he cycles to work along the river.",
    "The quarterly report is due on the fifth of June and Carol owns the revenue section.",
    "Dan is allergic to peanuts, prefers tea to coffee and plays the cello on Sundays.",
    "Memory pages leave the short-term queue when it overflows and join a mid-term segment.",
    "What did Alice name her cat? When is the report due? Where does Bob work now?",
    "The assistant answers questions about the user's life using the memories it was given.",
    "Numbers like 2024, 17 and 3.5 and dates like 2023-05-08 appear in conversations too.",
]


def build_tiny_model(path: str | Path, *, seed: int = 0, layers: int = 2, hidden: int = 64) -> Path:
    """Save a random tiny Llama and a trained byte-level BPE tokenizer with a chat template under `path`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    raw.train_from_iterator(CORPUS * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        additional_special_tokens=SPECIAL_TOKENS[3:],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(out)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        # wider than the default 0.02 so a random model's greedy output varies from token to token
        initializer_range=0.3,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    return out
