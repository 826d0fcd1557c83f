"""The model registry file: what it accepts, and the errors that name what is wrong with it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from llmbasedos.gateway.llm import ModelRegistry, RegistryError
from llmbasedos.local_llm import installed as local_llm_installed
from llmbasedos.protocol import errors
from llmbasedos.settings import Settings

GOOD = """
default: cloud
models:
  cloud:
    provider: openai
    base_url: https://api.example.org/v1/
    model: big-model
    api_key_env: EXAMPLE_API_KEY
    options: {temperature: 0.2, max_tokens: 256}
    timeout: 30
    fallbacks: [near]
  near:
    provider: anthropic
    model: claude-x
"""


def _settings(config: Path) -> Settings:
    return Settings(state_dir=config, run_dir=config, data_dir=config, log_dir=config, config_dir=config,
                    virtual_root=config)


def test_a_valid_file_is_read_with_defaults_filled_in() -> None:
    reg = ModelRegistry.parse(GOOD)
    assert reg.default == "cloud" and reg.aliases() == ["cloud", "near"]
    cloud = reg.get("cloud")
    assert cloud.base_url == "https://api.example.org/v1"
    assert dict(cloud.options) == {"temperature": 0.2, "max_tokens": 256}
    assert cloud.fallbacks == ("near",) and cloud.timeout == 30 and cloud.embeddings is True
    near = reg.get("near")
    assert near.base_url == "https://api.anthropic.com/v1" and near.embeddings is False
    assert reg.get(None).alias == "cloud"


@pytest.mark.parametrize(("text", "fault"), [
    ("models: [1, 2]", "models: must be a mapping"),
    ("modles: {}", "unknown top-level key 'modles'"),
    ("models:\n  a:\n    provider: gpt\n    base_url: http://x/v1\n    model: m\n", "models.a.provider"),
    ("models:\n  a:\n    provider: openai\n    base_url: ftp://x\n    model: m\n", "models.a.base_url"),
    ("models:\n  a:\n    provider: openai\n    base_url: http://x/v1\n", "models.a.model"),
    ("models:\n  a:\n    provider: openai\n    base_url: http://x/v1\n    model: m\n    colour: red\n",
     "unknown key 'colour'"),
    ("models:\n  a:\n    provider: openai\n    base_url: http://x/v1\n    model: m\n    fallbacks: [b]\n",
     "models.a.fallbacks: unknown alias 'b'"),
    ("models:\n  a:\n    provider: openai\n    base_url: http://x/v1\n    model: m\n    fallbacks: [a]\n",
     "cannot fall back to itself"),
    ("models:\n  a:\n    provider: openai\n    base_url: http://x/v1\n    model: m\n    options: {model: z}\n",
     "models.a.options: unknown option 'model'"),
    ("models:\n  a:\n    provider: openai\n    base_url: http://x/v1\n    model: m\n    timeout: -1\n",
     "models.a.timeout"),
    ("models:\n  a:\n    provider: openai\n    base_url: http://x/v1\n    model: m\n"
     "    api_key_env: A\n    api_key_file: /k\n", "not both"),
    ("models:\n  a:\n    provider: anthropic\n    model: m\n    embeddings: true\n", "no embeddings endpoint"),
    ("default: b\nmodels:\n  a:\n    provider: openai\n    base_url: http://x/v1\n    model: m\n", "default: 'b'"),
    ("models:\n  'bad alias!':\n    provider: openai\n    base_url: http://x/v1\n    model: m\n", "an alias is"),
    ("models: {a: [\n", "line 2: not valid YAML"),
])
def test_invalid_files_are_refused_with_the_place_named(text: str, fault: str) -> None:
    with pytest.raises(RegistryError) as info:
        ModelRegistry.parse(text, "llm_models.yaml")
    assert str(info.value).startswith("llm_models.yaml: ")
    assert fault in str(info.value)


def test_a_key_file_readable_by_others_is_refused_at_load() -> None:
    d = Path(tempfile.mkdtemp(prefix="llmr", dir="/tmp"))
    (d / "k").write_text("sk-abc")
    (d / "k").chmod(0o644)
    text = "models:\n  a:\n    provider: openai\n    base_url: http://x/v1\n    model: m\n    api_key_file: k\n"
    with pytest.raises(RegistryError, match="chmod 600"):
        ModelRegistry.parse(text, base_dir=d)
    (d / "k").chmod(0o600)
    assert ModelRegistry.parse(text, base_dir=d).get("a").api_key() == "sk-abc"


def test_registry_file_is_found_in_the_config_dir_or_by_env_override() -> None:
    d = Path(tempfile.mkdtemp(prefix="llmr", dir="/tmp"))
    (d / "llm_models.yaml").write_text(GOOD)
    assert ModelRegistry.load(_settings(d)).default == "cloud"
    other = d / "other.yaml"
    other.write_text("models:\n  x:\n    provider: openai\n    base_url: http://h/v1\n    model: m\n")
    os.environ["LLMBDO_LLM_MODELS"] = str(other)
    try:
        assert ModelRegistry.load(_settings(d)).aliases() == ["x"]
        other.unlink()
        with pytest.raises(RegistryError, match="LLMBDO_LLM_MODELS"):
            ModelRegistry.load(_settings(d))
    finally:
        del os.environ["LLMBDO_LLM_MODELS"]


def test_without_a_file_the_builtin_local_alias_depends_on_the_extra() -> None:
    d = Path(tempfile.mkdtemp(prefix="llmr", dir="/tmp"))
    reg = ModelRegistry.load(_settings(d))
    if local_llm_installed():
        assert reg.default == "local"
        assert reg.get("local").base_url.startswith("http://127.0.0.1:")
        assert reg.get("local").embeddings is False
    else:
        assert reg.default is None
        with pytest.raises(errors.FeatureUnavailable, match="No LLM model is configured"):
            reg.get(None)


def test_an_empty_registry_says_no_model_is_configured() -> None:
    reg = ModelRegistry.parse("models: {}\n")
    with pytest.raises(errors.FeatureUnavailable, match="No LLM model is configured"):
        reg.get(None)
    with pytest.raises(errors.NotFound, match="'x'"):
        reg.get("x")
