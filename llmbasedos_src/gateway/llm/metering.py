"""How one LLM call is charged against its client's daily token quota.

Before a provider is called, the most the call can cost is reserved with the Policy: an upper estimate of its
prompt plus its max_tokens, the max_tokens the provider is sent, so the answer cannot be longer. A client is
admitted while anything of its day is neither used nor reserved, so calls sent at once take the day at most
one call past the quota. When the call ends, however it ends, the reservation is replaced exactly once by:

- the provider's own count when the call completed, else an estimate of the prompt and the answer;
- nothing when the provider never took the request: unreachable, refused with an error status, or the options
  or the key refused before anything was sent;
- the whole reservation otherwise: the caller left or cancelled, the call timed out, the answer broke off.
  The provider's request is then closed at once, not read to its end (a cancel stops the work), and the model
  may have generated up to max_tokens that nobody read: the reservation is the bound on that. A call without
  max_tokens (only a client with no daily quota sends none) is charged its prompt and what was received.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from llmbasedos.gateway.llm.providers import ProviderRejected, ProviderUnreachable
from llmbasedos.gateway.policy.gatekeeper import ClientIdentity, Policy
from llmbasedos.protocol.errors import FeatureUnavailable, InvalidParams

__all__ = ["Charge", "metered"]

log = logging.getLogger("llmbasedos.gateway.llm")

# Errors that prove the provider generated nothing for this call.
_NOTHING_GENERATED = (ProviderUnreachable, ProviderRejected, InvalidParams, FeatureUnavailable)


class Charge:
    """What one call is charged when it ends: `used` once its count is known, else the rules above."""

    __slots__ = ("bounded", "prompt_estimate", "reserved", "seen", "used")

    def __init__(self, reserved: int, bounded: bool, prompt_estimate: int) -> None:
        self.reserved = reserved
        self.bounded = bounded  # the call had a max_tokens, so the reservation bounds what it can cost
        self.prompt_estimate = prompt_estimate
        self.used: int | None = None
        self.seen = 0  # answer pieces received, for a call without a bound

    def total(self) -> int:
        if self.used is not None:
            return self.used
        return self.reserved if self.bounded else self.prompt_estimate + self.seen


@contextlib.contextmanager
def metered(policy: Policy, client: ClientIdentity, prompt: int, max_tokens: int | None,
            prompt_estimate: int) -> Iterator[Charge]:
    """Reserve `prompt` + `max_tokens` for the call in the block (QuotaExceeded when nothing is left), and
    settle the reservation when the block ends, on errors and cancellation too."""
    reservation = policy.reserve_llm_tokens(client, prompt + (max_tokens or 0))
    charge = Charge(reservation.tokens, max_tokens is not None, prompt_estimate)
    try:
        yield charge
    except _NOTHING_GENERATED:
        if charge.used is None:
            charge.used = 0
        raise
    finally:
        try:
            policy.settle_llm_tokens(client, reservation, charge.total())
        except Exception:
            log.exception("settling LLM token usage failed")
