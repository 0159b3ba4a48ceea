"""memos.tokens: vendored tiktoken encodings (offline), a local HF tokenizer, counting and truncation."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import memos.tokens as tokens
from memos.errors import UserError
from memos.tokens import (
    HFTokenizer,
    TiktokenTokenizer,
    Tokenizer,
    count_tokens,
    get_tokenizer,
    truncate_to_tokens,
    vendored_encodings,
)

SAMPLE = "Memory is paged, not lost — 記憶."
SAMPLE_CL100K = [10869, 374, 281, 3359, 11, 539, 5675, 2001, 9085, 101, 246, 162, 228, 114, 13]
SAMPLE_O200K = [15009, 382, 4432, 295, 11, 625, 8803, 2733, 87136, 246, 93622, 114, 13]


# ---- vendored tiktoken encodings -------------------------------------------------------------------


def test_cl100k_exact_ids() -> None:
    tok = get_tokenizer("cl100k_base")
    assert tok.name == "cl100k_base"
    assert tok.encode("hello world") == [15339, 1917]
    assert tok.encode(SAMPLE) == SAMPLE_CL100K
    assert tok.count(SAMPLE) == 15
    assert tok.decode(SAMPLE_CL100K) == SAMPLE


def test_o200k_exact_ids() -> None:
    tok = get_tokenizer("o200k_base")
    assert tok.encode("hello world") == [24912, 2375]
    assert tok.encode(SAMPLE) == SAMPLE_O200K
    assert tok.count(SAMPLE) == 13
    assert tok.decode(SAMPLE_O200K) == SAMPLE


def test_empty_text() -> None:
    assert count_tokens("") == 0
    assert count_tokens("", "o200k_base") == 0
    tok = get_tokenizer("cl100k_base")
    assert tok.encode("") == []
    assert tok.count("") == 0
    assert tok.decode([]) == ""


def test_special_token_strings_are_plain_text() -> None:
    tok = get_tokenizer("cl100k_base")
    assert tok.encode("<|endoftext|>") == [27, 91, 8862, 728, 428, 91, 29]


def test_count_tokens_default_and_by_name() -> None:
    assert count_tokens(SAMPLE) == 15
    assert count_tokens(SAMPLE, "o200k_base") == 13
    assert count_tokens(SAMPLE, get_tokenizer("o200k_base")) == 13


def test_get_tokenizer_caches_and_satisfies_protocol() -> None:
    tok = get_tokenizer("cl100k_base")
    assert get_tokenizer("cl100k_base") is tok
    assert get_tokenizer() is tok
    assert isinstance(tok, Tokenizer)
    assert isinstance(tok, TiktokenTokenizer)


@pytest.mark.parametrize("name", ["no_such_encoding", "r50k_base", "gpt2"])
def test_unknown_encoding_is_a_user_error_naming_the_vendored_ones(name: str) -> None:
    with pytest.raises(UserError) as info:
        get_tokenizer(name)
    assert name in str(info.value)
    assert "cl100k_base" in str(info.value)
    assert "o200k_base" in str(info.value)
    with pytest.raises(UserError):
        TiktokenTokenizer(name)


def test_vendored_encodings_listed() -> None:
    assert vendored_encodings() == ["cl100k_base", "o200k_base"]


def test_loading_never_touches_the_network_or_tiktoken_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import tiktoken.load

    def no_network(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(tiktoken.load, "read_file", no_network)
    user_cache = tmp_path / "user-tiktoken-cache"
    user_cache.mkdir()
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(user_cache))

    for name, ids in (("cl100k_base", SAMPLE_CL100K), ("o200k_base", SAMPLE_O200K)):
        fresh = TiktokenTokenizer(name)  # a new instance builds its Encoding from the vendored file
        assert fresh.encode(SAMPLE) == ids

    assert os.environ["TIKTOKEN_CACHE_DIR"] == str(user_cache)
    assert list(user_cache.iterdir()) == []


def test_specs_match_installed_tiktoken(monkeypatch: pytest.MonkeyPatch) -> None:
    """Our copy of pattern/special tokens/hashes equals what tiktoken's own constructors would build."""
    import tiktoken_ext.openai_public as openai_public

    seen: dict[str, str | None] = {}

    def fake_load(url: str, expected_hash: str | None = None) -> dict[bytes, int]:
        seen["url"], seen["hash"] = url, expected_hash
        return {}

    monkeypatch.setattr(openai_public, "load_tiktoken_bpe", fake_load)
    for name, spec in tokens._SPECS.items():
        upstream = openai_public.ENCODING_CONSTRUCTORS[name]()
        assert upstream["pat_str"] == spec.pat_str
        assert upstream["special_tokens"] == spec.special_tokens
        assert seen["hash"] == spec.sha256
        assert hashlib.sha1(str(seen["url"]).encode()).hexdigest() == spec.cache_key
        vendored = Path(tokens.__file__).parent / "tiktoken_cache" / spec.cache_key
        assert hashlib.sha256(vendored.read_bytes()).hexdigest() == spec.sha256


def test_import_is_cheap() -> None:
    code = (
        "import sys, memos.tokens; "
        "print(sorted(m for m in ('tiktoken', 'transformers', 'torch', 'tokenizers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---- truncation ------------------------------------------------------------------------------------


def test_truncate_exact() -> None:
    assert truncate_to_tokens(SAMPLE, 1) == "Memory"
    assert truncate_to_tokens(SAMPLE, 3) == "Memory is p"
    assert truncate_to_tokens(SAMPLE, 3, "o200k_base") == "Memory is pag"
    assert truncate_to_tokens(SAMPLE, 5, get_tokenizer("o200k_base")) == "Memory is paged,"
    assert truncate_to_tokens(SAMPLE, 15) == SAMPLE
    assert truncate_to_tokens(SAMPLE, 1000) == SAMPLE
    assert truncate_to_tokens(SAMPLE, 0) == ""
    assert truncate_to_tokens("", 5) == ""


def test_truncate_drops_a_split_multibyte_character() -> None:
    # cl100k spells 記 with tokens 9085 + 101: a cut after 9085 must not leave U+FFFD behind
    assert truncate_to_tokens(SAMPLE, 9) == "Memory is paged, not lost — "
    assert truncate_to_tokens(SAMPLE, 10) == "Memory is paged, not lost — "
    assert truncate_to_tokens(SAMPLE, 11) == "Memory is paged, not lost — 記"
    for n in range(len(SAMPLE_CL100K) + 1):
        head = truncate_to_tokens(SAMPLE, n)
        assert SAMPLE.startswith(head)
        assert count_tokens(head) <= n


def test_truncate_negative_is_a_user_error() -> None:
    with pytest.raises(UserError):
        truncate_to_tokens(SAMPLE, -1)


# ---- a local model's tokenizer ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("tokenizers")
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer as RawTokenizer
    from tokenizers import models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = RawTokenizer(models.WordLevel(unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=["[UNK]", "[PAD]"])
    raw.train_from_iterator(["memory is paged not lost", "memory cube page"], trainer)
    path = tmp_path_factory.mktemp("tiny-hf-model")
    PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]", pad_token="[PAD]").save_pretrained(path)
    return path


def test_hf_tokenizer_from_local_files(tiny_hf_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    vocab = {"[UNK]": 0, "[PAD]": 1, "memory": 2, "cube": 3, "is": 4, "lost": 5, "not": 6, "page": 7}
    vocab["paged"] = 8

    tok = HFTokenizer(tiny_hf_dir)
    assert isinstance(tok, Tokenizer)
    assert tok.name == f"hf:{tiny_hf_dir}"
    assert tok.tokenizer.get_vocab() == vocab
    assert tok.encode("memory is paged") == [2, 4, 8]
    assert tok.encode("memory zzz") == [2, 0]
    assert tok.encode("") == []
    assert tok.count("memory is paged not lost") == 5
    assert tok.count("") == 0
    assert tok.decode([2, 4, 8]) == "memory is paged"

    assert count_tokens("memory cube page", tok) == 3
    assert truncate_to_tokens("memory is paged not lost", 2, tok) == "memory is"
    assert truncate_to_tokens("memory is paged not lost", 9, tok) == "memory is paged not lost"

    by_name = get_tokenizer(f"hf:{tiny_hf_dir}")
    assert isinstance(by_name, HFTokenizer)
    assert by_name.encode("memory is paged") == [2, 4, 8]
    assert get_tokenizer(f"hf:{tiny_hf_dir}/") is by_name
    assert count_tokens("memory is paged", f"hf:{tiny_hf_dir}") == 3

    wrapped = HFTokenizer(tok.tokenizer)
    assert wrapped.encode("cube page") == [3, 7]


def test_hf_tokenizer_bad_input_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError):
        HFTokenizer(tmp_path / "missing")
    with pytest.raises(UserError):
        get_tokenizer("hf:")
    with pytest.raises(UserError):
        HFTokenizer(object())
