"""The error the `llmbasedos` command reports to the user: one clear message and exit status 1.

Every module behind the command (state dir, ports, starting and stopping) raises it; `cli.main` prints it.
"""

from __future__ import annotations

__all__ = ["CLIError"]


class CLIError(Exception):
    """A failure to report to the user in one clear message (exit status 1)."""
