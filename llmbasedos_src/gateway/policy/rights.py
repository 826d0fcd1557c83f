"""What one client may do under the licence in force: its allowlist within its tier within the licence's tier.

Rates and quotas are the stricter of the tiers'; `combine` computes them once per identity and day.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmbasedos.gateway.policy.tiers import Tier, match_names, names_of

__all__ = ["Rights", "combine"]

_LLM_PREFIX = "mcp.llm."  # methods that need llm_access as well as an allowed capability


@dataclass(frozen=True)
class Rights:
    """What one identity may do under the licence in force; computed once per identity and day."""

    tiers: tuple[Tier, ...]  # the client's tier and the licence tier (once when they are the same)
    allow: tuple[str, ...]
    rate: int | None
    window: float
    per_day: int | None
    llm_access: bool
    max_tokens_per_request: int | None
    max_tokens_per_day: int | None

    def allows(self, method: str, upstream: bool = False) -> bool:
        """`upstream`: the method is one of an upstream MCP server's (see tiers.names_of)."""
        if not self.llm_access and method.startswith(_LLM_PREFIX):
            return False
        return (match_names(self.allow, names_of(method, upstream))
                and all(t.allows(method, upstream) for t in self.tiers))

    def allows_model(self, alias: str) -> bool:
        return all(t.allows_model(alias) for t in self.tiers)

    def limits(self) -> dict[str, Any]:
        # Patterns do not intersect into one list; show the narrower one (a list without `*`).
        narrow = [list(t.allowed_llm_models) for t in self.tiers if "*" not in t.allowed_llm_models]
        return {
            "rate_limit_requests": self.rate,
            "rate_limit_window_seconds": self.window,
            "requests_per_day": self.per_day,
            "llm_access": self.llm_access,
            "allowed_llm_models": min(narrow, key=len) if narrow else ["*"],
            "max_tokens_per_request": self.max_tokens_per_request,
            "max_tokens_per_day": self.max_tokens_per_day,
        }


def _min(values: list[int | None]) -> int | None:
    finite = [v for v in values if v is not None]
    return min(finite) if finite else None


def combine(tiers: tuple[Tier, ...], allow: tuple[str, ...]) -> Rights:
    # Windows may differ between the tiers: the stricter rate is the one with fewer requests per second.
    rated = [(t.rate_limit_requests / t.rate_limit_window_seconds, i, t)
             for i, t in enumerate(tiers) if t.rate_limit_requests is not None]
    strictest = min(rated)[2] if rated else None
    return Rights(
        tiers=tiers,
        allow=allow,
        rate=strictest.rate_limit_requests if strictest else None,
        window=strictest.rate_limit_window_seconds if strictest else tiers[0].rate_limit_window_seconds,
        per_day=_min([t.requests_per_day for t in tiers]),
        llm_access=all(t.llm_access for t in tiers),
        max_tokens_per_request=_min([t.max_tokens_per_request for t in tiers]),
        max_tokens_per_day=_min([t.max_tokens_per_day for t in tiers]),
    )
