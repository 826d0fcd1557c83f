"""The runs in flight, their lineage, and the caps that keep them bounded.

A run started by a client is a root. A run started *by a run* — a `call` step calling mcp.agent.runWorkflow,
which comes back through the gateway with the parent's execution id in `caller.run` — is a child of that run:
it joins the parent's tree one level deeper. A `workflow` step is a level too (in the same execution). Every
tree is bounded in depth (`max_depth`) and in the descendants it may ever have (`max_children`), so a workflow
that starts itself twice ends after a few levels instead of making thousands of runs; and runs in flight are
bounded per client (`max_runs_per_client`) and in total (`max_runs`).

A tree lives as long as one of its runs does; its descendant count is never given back while it lives, since
the point is to bound the work a tree does, not only the work it does at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmbasedos.protocol import errors
from llmbasedos.servers.agent.config import AgentConfig, setting_of

__all__ = ["LiveRuns", "Lineage"]

_LOCAL = "(agent socket)"  # the client key of runs started on the agent's own socket, which only the owner reaches


@dataclass
class _Tree:
    descendants: int = 0  # ever started under the root, sub-workflows included
    live: int = 0  # runs of the tree in flight


@dataclass
class Lineage:
    """Where a live run sits: its tree's root, its own level, and how deep its `workflow` steps are now."""

    root: str
    client: str | None
    depth: int
    nested: int = 0


class LiveRuns:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self._runs: dict[str, Lineage] = {}
        self._trees: dict[str, _Tree] = {}
        self._per_client: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._runs)

    def admit(self, execution_id: str, client: str | None, parent: str | None = None) -> Lineage:
        """Take a place for a new run of `client`, a child of the live run `parent` when given.

        RateLimited when a cap on runs in flight is reached, QuotaExceeded when the parent's tree may not grow,
        InvalidRequest when `parent` is not a live run, Forbidden when it is another client's.
        """
        cfg = self.config
        key = client or _LOCAL
        if parent is None:
            lineage = Lineage(root=execution_id, client=client, depth=0)
        else:
            above = self._runs.get(parent)
            if above is None:
                raise errors.InvalidRequest(f"The parent run {parent} is not running")
            if above.client is not None and above.client != client:
                raise errors.Forbidden(f"The parent run {parent} belongs to another client")
            lineage = Lineage(root=above.root, client=client, depth=above.depth + above.nested + 1)
            self._check_growth(above.root, lineage.depth)
        if len(self._runs) >= cfg.max_runs:
            raise errors.RateLimited(f"{cfg.max_runs} workflow runs are in flight already, the most the agent runs "
                                     f"at once ({setting_of('max_runs')})", {"retry_after": 1})
        if self._per_client.get(key, 0) >= cfg.max_runs_per_client:
            raise errors.RateLimited(f"this client has {cfg.max_runs_per_client} workflow runs in flight already, "
                                     f"the most one client may have ({setting_of('max_runs_per_client')})",
                                     {"retry_after": 1})
        tree = self._trees.setdefault(lineage.root, _Tree())
        if parent is not None:
            tree.descendants += 1
        tree.live += 1
        self._per_client[key] = self._per_client.get(key, 0) + 1
        self._runs[execution_id] = lineage
        return lineage

    def end(self, execution_id: str) -> None:
        """The run ended (whichever way): give back its place. Unknown ids are ignored."""
        lineage = self._runs.pop(execution_id, None)
        if lineage is None:
            return
        key = lineage.client or _LOCAL
        left = self._per_client.get(key, 1) - 1
        if left > 0:
            self._per_client[key] = left
        else:
            self._per_client.pop(key, None)
        tree = self._trees.get(lineage.root)
        if tree is not None:
            tree.live -= 1
            if tree.live <= 0:
                del self._trees[lineage.root]

    def enter_workflow(self, execution_id: str) -> None:
        """A `workflow` step of the run starts: one level deeper, one more descendant of its tree."""
        lineage = self._runs[execution_id]
        self._check_growth(lineage.root, lineage.depth + lineage.nested + 1)
        self._trees[lineage.root].descendants += 1
        lineage.nested += 1

    def leave_workflow(self, execution_id: str) -> None:
        lineage = self._runs.get(execution_id)
        if lineage is not None and lineage.nested > 0:
            lineage.nested -= 1

    def _check_growth(self, root: str, depth: int) -> None:
        cfg = self.config
        if depth > cfg.max_depth:
            raise errors.QuotaExceeded(f"workflows nest deeper than {cfg.max_depth} levels "
                                       f"({setting_of('max_depth')})")
        tree = self._trees.get(root)
        if tree is not None and tree.descendants >= cfg.max_children:
            raise errors.QuotaExceeded(f"the run {root} has started {cfg.max_children} sub-workflows and runs "
                                       f"already, the most one run may ({setting_of('max_children')})")
