"""A tiny random Llama-style causal LM and its tokenizer, saved as a local model directory.

Built from a config (no download) with the package's own builders; loading it goes through the same
`from_pretrained` code a user's real model directory does.
"""

from __future__ import annotations

from pathlib import Path

from memos.llm.testing import random_llama, random_tokenizer

#: the memories the tier and tier-CLI tests store (shortened sentences of CORPUS)
FACTS = [
    "Alice adopted a grey cat named Pixel in March.",
    "Bob moved to Lisbon for a job at a robotics company.",
    "Carol owns the revenue section of the quarterly report.",
    "Dan is allergic to peanuts and prefers tea to coffee.",
    "The quarterly report is due on the fifth of June.",
]

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
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = random_tokenizer(CORPUS * 4, vocab_size=600)
    tokenizer.save_pretrained(out)
    # a wider initialisation than the default 0.02, so a random model's greedy output varies from token to token
    model = random_llama(tokenizer, hidden=hidden, layers=layers, heads=4, kv_heads=2, initializer_range=0.3, seed=seed)
    model.save_pretrained(out)
    return out
