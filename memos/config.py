"""Settings: one typed object, from keyword overrides > MEMOS_* environment > <home>/memos.toml > defaults."""

from __future__ import annotations

import contextvars
import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from memos.errors import UserError, first_problem
from memos.log import register_secret

CONFIG_FILE = "memos.toml"
#: the largest memos.toml a home may have; a bigger one is refused before it is read
MAX_CONFIG_BYTES = 1 << 20
_toml_path: contextvars.ContextVar[Path | None] = contextvars.ContextVar("memos_toml_path", default=None)


class Settings(BaseSettings):
    """Everything configurable about a memos home."""

    model_config = SettingsConfigDict(env_prefix="MEMOS_", extra="forbid", validate_default=True)

    home: Path = Path("~/.memos")
    #: SQLAlchemy URL of the catalog; None means a SQLite file inside the home
    catalog_url: str | None = None
    #: None: an embedded chromadb in the home; "http://host:port": a Chroma server
    vector_url: str | None = None
    #: "minilm" (local all-MiniLM-L6-v2), "hash" / "hash:DIM" (deterministic), "openai:MODEL"
    embedder: str = "minilm"
    embed_batch_size: int = Field(default=32, ge=1, le=4096)
    #: tiktoken encoding used for token counts when no local model is active
    tokenizer: str = "cl100k_base"
    #: "none", "openai:MODEL" (any OpenAI-compatible server at openai_base_url)
    llm: str = "none"
    #: for MEMOS_LLM=hf:PATH: "auto" (cuda when available), "cpu", "cuda", "cuda:1", ...
    hf_device: str = "auto"
    #: for MEMOS_LLM=hf:PATH: "auto" (float32 on CPU, bfloat16 on a GPU), "float32", "bfloat16", "float16"
    hf_dtype: str = "auto"
    #: bytes the activation tier (KV blocks) may hold; the coldest blocks are dropped beyond it
    activation_budget_bytes: int = Field(default=2 * 1024**3, ge=0)
    #: the most tokens one namespace's activation block may cover
    activation_block_tokens: int = Field(default=2048, ge=16, le=262_144)
    #: a cube joins the activation block after it was used in this many working sets
    activation_min_uses: int = Field(default=3, ge=1)
    openai_base_url: str | None = None
    #: a secret: kept as SecretStr, so reprs, dumps and errors show "**********"; read it with `secret()`
    openai_api_key: SecretStr | None = None
    openai_timeout_s: float = Field(default=60.0, gt=0)
    openai_max_retries: int = Field(default=2, ge=0, le=10)
    #: the longest text a single cube may hold, in characters
    max_text_chars: int = Field(default=20_000, ge=1)
    #: the largest conversation file `memos ingest` reads, in bytes (refused before it is read)
    max_ingest_bytes: int = Field(default=256 << 20, ge=1)
    #: the largest archive `memos import` reads, in bytes: the file, and everything it decompresses to
    max_archive_bytes: int = Field(default=2 << 30, ge=1)
    #: paging constants: a preset ("paper" or "reference-code", see memos/paging.py) ...
    paging_preset: str = "paper"
    #: ... with single constants overridden, e.g. {"theta": 0.5} (MEMOS_PAGING='{"theta": 0.5}', or a
    #: [paging] table in memos.toml)
    paging: dict[str, float | int | str] = Field(default_factory=dict)
    #: run paging in a background thread after writes (tick always runs it too)
    auto_paging: bool = True
    #: the user the CLI acts as when --user is not given
    user: str | None = None
    log_json: bool = False
    log_level: str = "warning"

    @field_validator("catalog_url")
    @classmethod
    def _catalog_url(cls, value: str | None) -> str | None:
        """Blank means the default; `postgres://` (a common spelling SQLAlchemy does not know) means postgresql://."""
        if value is None or not value.strip():
            return None
        value = value.strip()
        if value.startswith("postgres://"):
            value = "postgresql://" + value[len("postgres://") :]
        return value

    @field_validator("vector_url")
    @classmethod
    def _vector_url(cls, value: str | None) -> str | None:
        """Blank means the embedded index; otherwise http[s]://host[:port][/collection]."""
        if value is None or not value.strip():
            return None
        from memos.storage.vectors import server_target

        try:
            server_target(value.strip())
        except UserError as exc:
            raise ValueError(str(exc)) from None
        return value.strip()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Order the sources: overrides, then environment, then the home's memos.toml."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _toml_path.get()
        if path is not None and path.is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    def model_post_init(self, context: Any, /) -> None:
        """Register every secret setting with the log scrubber, so no log line or error shows it."""
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                register_secret(value.get_secret_value())

    def secret(self, name: str) -> str | None:
        """The clear value of a secret setting (e.g. "openai_api_key"), for handing to a client only."""
        value = getattr(self, name)
        return value.get_secret_value() if isinstance(value, SecretStr) else value

    @property
    def catalog(self) -> str:
        """The catalog URL actually used."""
        return self.catalog_url or f"sqlite:///{self.home / 'catalog.db'}"

    @classmethod
    def load(cls, home: str | Path | None = None, **overrides: Any) -> Settings:
        """Read settings for a home (None: MEMOS_HOME or ~/.memos), raising UserError on bad values."""
        import os

        raw_home = home if home is not None else os.environ.get("MEMOS_HOME", "~/.memos")
        resolved = Path(raw_home).expanduser().resolve()
        toml_file = resolved / CONFIG_FILE
        if toml_file.is_file():
            check_config_file(toml_file)
        token = _toml_path.set(toml_file)
        try:
            return cls(**{**overrides, "home": resolved})
        except ValidationError as exc:
            where, problem = (_one_line(part) for part in first_problem(exc, "settings"))
            # not chained: pydantic's own error quotes the raw input, which may be an API key
            raise UserError(f"bad setting {where}: {problem} (check MEMOS_{where.upper()} or {toml_file})") from None
        finally:
            _toml_path.reset(token)


def check_config_file(path: Path) -> dict[str, Any]:
    """The parsed memos.toml, or one UserError line: too large (checked before reading), not UTF-8, not TOML."""
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise UserError(f"{path} is {size} bytes, over the limit of {MAX_CONFIG_BYTES} for a settings file")
        with path.open("rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise UserError(f"{path} grew over the limit of {MAX_CONFIG_BYTES} bytes for a settings file")
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not UTF-8 text (bad byte at offset {exc.start}); fix or delete it") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path} is not valid TOML ({_one_line(str(exc))}); fix or delete it") from None
    except (ValueError, RecursionError) as exc:
        # tomllib lets int()'s digit limit and deep nesting through as other errors
        why = "nested too deeply" if isinstance(exc, RecursionError) else "a number has too many digits"
        raise UserError(f"{path} is not valid TOML ({why}); fix or delete it") from None


def _one_line(text: str) -> str:
    """Text with newlines and other control characters escaped, so that an error stays on one line."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
