"""Token counting: vendored tiktoken encodings (offline, never downloads) and a local model's own tokenizer.

Names understood by :func:`get_tokenizer`:

* ``"cl100k_base"``, ``"o200k_base"`` -- OpenAI BPE encodings, read from the rank files shipped in
  ``memos/tiktoken_cache/`` (checked by SHA-256); nothing is fetched over the network.
* ``"hf:/path/to/model"`` -- the tokenizer saved with a local Hugging Face model (local files only).

``import memos.tokens`` is cheap: tiktoken and transformers are imported on first use.
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from memos.errors import BackendError, UserError

if TYPE_CHECKING:
    import tiktoken

__all__ = [
    "DEFAULT_ENCODING",
    "HFTokenizer",
    "TiktokenTokenizer",
    "Tokenizer",
    "count_tokens",
    "get_tokenizer",
    "truncate_to_tokens",
    "vendored_encodings",
]

DEFAULT_ENCODING = "cl100k_base"
HF_PREFIX = "hf:"
_CACHE_PACKAGE_DIR = "tiktoken_cache"


@runtime_checkable
class Tokenizer(Protocol):
    """Splits text into integer token ids and back."""

    #: identifies the tokenizer, e.g. "cl100k_base" or "hf:/models/qwen"
    name: str

    def encode(self, text: str) -> list[int]:
        """Return the token ids of ``text`` (special-token strings are treated as plain text)."""
        ...

    def count(self, text: str) -> int:
        """Return the number of tokens in ``text``."""
        ...

    def decode(self, ids: list[int]) -> str:
        """Return the text of ``ids``."""
        ...


# --------------------------------------------------------------------------------------------------
# tiktoken encodings, vendored

_ENDOFTEXT = "<|endoftext|>"
_FIM_PREFIX = "<|fim_prefix|>"
_FIM_MIDDLE = "<|fim_middle|>"
_FIM_SUFFIX = "<|fim_suffix|>"
_ENDOFPROMPT = "<|endofprompt|>"


@dataclass(frozen=True)
class _EncodingSpec:
    """What tiktoken_ext.openai_public's constructor builds, minus the download."""

    name: str
    #: sha1 of the blob URL: the name tiktoken's own cache uses, and the vendored file's name
    cache_key: str
    #: sha256 of the rank file (the same expected_hash tiktoken checks)
    sha256: str
    pat_str: str
    special_tokens: dict[str, int]


# Patterns and special tokens copied from tiktoken 0.14.0 tiktoken_ext/openai_public.py;
# tests/kernel/test_tokens.py checks they still match the installed tiktoken.
_SPECS: dict[str, _EncodingSpec] = {
    "cl100k_base": _EncodingSpec(
        name="cl100k_base",
        cache_key="9b5ad71b2ce5302211f9c61530b329a4922fc6a4",
        sha256="223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        pat_str=(
            r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
            r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
        ),
        special_tokens={
            _ENDOFTEXT: 100257,
            _FIM_PREFIX: 100258,
            _FIM_MIDDLE: 100259,
            _FIM_SUFFIX: 100260,
            _ENDOFPROMPT: 100276,
        },
    ),
    "o200k_base": _EncodingSpec(
        name="o200k_base",
        cache_key="fb374d419588a4632f3f557e76b4b70aebbca790",
        sha256="446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        pat_str="|".join(
            [
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                r"""\p{N}{1,3}""",
                r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
                r"""\s*[\r\n]+""",
                r"""\s+(?!\S)""",
                r"""\s+""",
            ]
        ),
        special_tokens={_ENDOFTEXT: 199999, _ENDOFPROMPT: 200018},
    ),
}


def vendored_encodings() -> list[str]:
    """Return the names of the tiktoken encodings shipped with memos."""
    return sorted(_SPECS)


def _read_vendored(spec: _EncodingSpec) -> bytes:
    # next to this module, not via importlib.resources: that trips over setuptools' editable finder
    path = Path(__file__).resolve().parent / _CACHE_PACKAGE_DIR / spec.cache_key
    try:
        data = path.read_bytes()
    except OSError as e:
        raise BackendError(
            f"the vendored rank file for {spec.name} is missing ({_CACHE_PACKAGE_DIR}/{spec.cache_key}); "
            "reinstall memos",
            encoding=spec.name,
        ) from e
    if hashlib.sha256(data).hexdigest() != spec.sha256:
        raise BackendError(
            f"the vendored rank file for {spec.name} is corrupt (sha256 mismatch); reinstall memos",
            encoding=spec.name,
        )
    return data


def _parse_ranks(data: bytes, name: str) -> dict[bytes, int]:
    # the .tiktoken format, as tiktoken.load.load_tiktoken_bpe parses it: "<base64 token> <rank>" lines
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        if not line:
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
        except ValueError as e:
            raise BackendError(f"bad line {line[:60]!r} in the vendored rank file for {name}") from e
    return ranks


def _load_encoding(name: str) -> tiktoken.Encoding:
    spec = _SPECS.get(name)
    if spec is None:
        raise UserError(
            f"unknown tokenizer encoding {name!r}: memos ships {', '.join(vendored_encodings())} "
            f"(or use '{HF_PREFIX}/path/to/model' for a local model's tokenizer)",
            encoding=name,
        )
    import tiktoken

    ranks = _parse_ranks(_read_vendored(spec), name)
    return tiktoken.Encoding(
        name=spec.name,
        pat_str=spec.pat_str,
        mergeable_ranks=ranks,
        special_tokens=dict(spec.special_tokens),
    )


class TiktokenTokenizer:
    """A tiktoken BPE encoding built from the rank file vendored in memos (never downloads)."""

    def __init__(self, encoding_name: str = DEFAULT_ENCODING) -> None:
        self.name = encoding_name
        self._encoding = _load_encoding(encoding_name)

    @property
    def encoding(self) -> tiktoken.Encoding:
        """The underlying ``tiktoken.Encoding``."""
        return self._encoding

    def encode(self, text: str) -> list[int]:
        """Return the token ids of ``text``; special-token strings are encoded as plain text."""
        return self._encoding.encode_ordinary(text)

    def count(self, text: str) -> int:
        """Return the number of tokens in ``text``."""
        return len(self._encoding.encode_ordinary(text)) if text else 0

    def decode(self, ids: list[int]) -> str:
        """Return the text of ``ids``; a split multi-byte character becomes U+FFFD."""
        return self._encoding.decode(list(ids), errors="replace")

    def __repr__(self) -> str:
        return f"TiktokenTokenizer({self.name!r})"


# --------------------------------------------------------------------------------------------------
# a local model's tokenizer


class HFTokenizer:
    """A Hugging Face tokenizer loaded from local files only (the active local model's own)."""

    def __init__(self, path_or_tokenizer: str | os.PathLike[str] | Any) -> None:
        if isinstance(path_or_tokenizer, str | os.PathLike):
            path = os.fspath(path_or_tokenizer)
            self._tokenizer = _load_hf_tokenizer(path)
            self.name = f"{HF_PREFIX}{path}"
        else:
            tok = path_or_tokenizer
            if not all(callable(getattr(tok, attr, None)) for attr in ("encode", "decode")):
                raise UserError(f"HFTokenizer needs a path or a transformers tokenizer, got {type(tok)!r}")
            self._tokenizer = tok
            self.name = f"{HF_PREFIX}{getattr(tok, 'name_or_path', '') or type(tok).__name__}"

    @property
    def tokenizer(self) -> Any:
        """The wrapped transformers tokenizer."""
        return self._tokenizer

    def encode(self, text: str) -> list[int]:
        """Return the token ids of ``text`` without BOS/EOS or other added special tokens."""
        if not text:
            return []
        return list(self._tokenizer.encode(text, add_special_tokens=False))

    def count(self, text: str) -> int:
        """Return the number of tokens in ``text``."""
        return len(self.encode(text))

    def decode(self, ids: list[int]) -> str:
        """Return the text of ``ids``, leaving spacing as the tokenizer produced it."""
        return str(self._tokenizer.decode(list(ids), clean_up_tokenization_spaces=False))

    def __repr__(self) -> str:
        return f"HFTokenizer({self.name!r})"


def _load_hf_tokenizer(path: str) -> Any:
    if not os.path.isdir(path):
        raise UserError(f"no local model directory at {path!r} to load a tokenizer from", path=path)
    try:
        from transformers import AutoTokenizer
    except ImportError as e:
        raise UserError("a local model's tokenizer needs transformers: pip install 'memos[local]'", path=path) from e
    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load a tokenizer from {path!r}: {e}", path=path) from e


# --------------------------------------------------------------------------------------------------
# lookup and helpers

_cache: dict[str, Tokenizer] = {}
_cache_lock = threading.Lock()
_CACHE_MAX = 8


def _cache_key(name: str) -> str:
    name = name.strip()
    if name.startswith(HF_PREFIX):
        path = name[len(HF_PREFIX) :].strip()
        if not path:
            raise UserError(f"tokenizer name {name!r} needs a path after '{HF_PREFIX}'")
        return HF_PREFIX + os.path.realpath(os.path.expanduser(path))
    return name


def get_tokenizer(name: str = DEFAULT_ENCODING) -> Tokenizer:
    """Return the (cached) tokenizer called ``name``: a vendored encoding or ``"hf:/path/to/model"``."""
    key = _cache_key(name)
    tok = _cache.get(key)
    if tok is not None:
        return tok
    with _cache_lock:
        tok = _cache.get(key)
        if tok is not None:
            return tok
        tok = HFTokenizer(key[len(HF_PREFIX) :]) if key.startswith(HF_PREFIX) else TiktokenTokenizer(key)
        if len(_cache) >= _CACHE_MAX:
            # drop the oldest non-vendored entry first; the vendored ones are cheap to keep
            victim = next((k for k in _cache if k.startswith(HF_PREFIX)), next(iter(_cache)))
            del _cache[victim]
        _cache[key] = tok
        return tok


def _resolve(tokenizer: Tokenizer | str | None) -> Tokenizer:
    if tokenizer is None:
        return get_tokenizer(DEFAULT_ENCODING)
    if isinstance(tokenizer, str):
        return get_tokenizer(tokenizer)
    return tokenizer


def count_tokens(text: str, tokenizer: Tokenizer | str | None = None) -> int:
    """Return how many tokens ``text`` is, by ``tokenizer`` (a Tokenizer or a name; cl100k_base if None)."""
    if not text:
        return 0
    return _resolve(tokenizer).count(text)


def truncate_to_tokens(text: str, max_tokens: int, tokenizer: Tokenizer | str | None = None) -> str:
    """Return the longest token-prefix of ``text`` that is at most ``max_tokens`` tokens."""
    if max_tokens < 0:
        raise UserError(f"max_tokens must be >= 0, got {max_tokens}", max_tokens=max_tokens)
    if not text or max_tokens == 0:
        return ""
    tok = _resolve(tokenizer)
    ids = tok.encode(text)
    if len(ids) <= max_tokens:
        return text
    n = max_tokens
    while n > 0:
        head = tok.decode(ids[:n])
        # a cut inside a multi-byte character decodes to U+FFFD: drop it rather than invent a character
        while head.endswith("\ufffd") and not text.startswith(head):
            head = head[:-1]
        # BPE is not prefix-stable: make sure the result really re-encodes within budget
        if head and tok.count(head) <= max_tokens:
            return head
        n -= 1
    return ""
