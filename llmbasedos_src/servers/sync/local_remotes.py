"""Remotes that reach the local disk, and the one rule that keeps them inside the virtual root.

A remote reaches the local disk when it is `type = local`, or when it wraps (alias, crypt, union, combine,
chunker, hasher, compress, ...) a local remote or a plain folder, at any depth of the chain in rclone.conf.
Through such a remote a client could otherwise read or write any host path (`disk:/etc`), or paths relative
to the server's working directory (`disk:data`).

`LLMBDO_SYNC_LOCAL_REMOTES` decides what happens to them:

- `refuse` (the default): they cannot be used; listRemotes says so, and runJob's error names the remote and
  this setting.
- `confine`: a `type = local` remote's path is a path of the virtual root, rewritten into the confined host
  path exactly like a plain path (`disk:/etc` is `<root>/etc`, `disk:data` is `<root>/data`, `disk:../..` is
  refused). A wrapping remote is usable only when every local folder it stores data in is fixed by
  rclone.conf, absolute, inside the virtual root once symlinks are resolved, and not read with `copy_links`.

A chain that cannot be checked (a connection string, an on-the-fly backend, an unknown remote, a loop, a
relative folder) is refused whatever the setting.
"""

from __future__ import annotations

import enum
import os
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from llmbasedos.servers.sync.remotes import Remote

__all__ = ["LocalRemotes", "Reach", "Verdict", "judge", "reach", "SETTING"]

SETTING = "LLMBDO_SYNC_LOCAL_REMOTES"
_MAX_DEPTH = 32


class LocalRemotes(enum.Enum):
    REFUSE = "refuse"
    CONFINE = "confine"

    @classmethod
    def from_env(cls) -> LocalRemotes:
        raw = (os.environ.get(SETTING) or cls.REFUSE.value).strip().lower()
        try:
            return cls(raw)
        except ValueError:
            raise ValueError(f"{SETTING} must be 'refuse' or 'confine', not {raw!r}") from None


@dataclass(frozen=True)
class Reach:
    """How one remote, at one path, reaches the local disk."""

    direct: bool  # the remote is `type = local`: the client's path is the host path
    folders: tuple[str, ...]  # host folders that data of a wrapping remote lives under (absolute, normalised)
    via: str  # how it reaches the disk, for messages (never a host path)
    problem: str | None = None  # why its reach cannot be known or kept in bounds


class _Unchecked(Exception):
    pass


def _split(target: str) -> tuple[str | None, str]:
    """rclone's own rule: `name:path` when a ':' comes before any '/', else a local path (name None)."""
    colon, slash = target.find(":"), target.find("/")
    if colon != -1 and (slash == -1 or colon < slash):
        return target[:colon], target[colon + 1:]
    return None, target


def _join(base: str, path: str) -> str:
    return posixpath.normpath(posixpath.join(base, path.lstrip("/"))) if path else posixpath.normpath(base)


def _folders(remotes: Mapping[str, Remote], name: str, path: str, seen: tuple[str, ...]) -> list[str]:
    """Host folders that `name:path` stores data under; [] for a remote that never touches the local disk."""
    if name in seen:
        raise _Unchecked(f"remote {name!r} refers to itself")
    if len(seen) > _MAX_DEPTH:
        raise _Unchecked("the chain of wrapped remotes is too deep")
    remote = remotes.get(name)
    if remote is None:
        raise _Unchecked(f"it wraps {name!r}, which is not a remote of rclone.conf")
    if remote.is_local:
        if remote.copy_links:
            raise _Unchecked(f"local remote {name!r} follows symlinks (copy_links)")
        if not path.startswith("/"):
            raise _Unchecked(f"it reaches local remote {name!r} with a relative path")
        return [_join("/", path)]
    out: list[str] = []
    for wrapped in remote.wraps:
        target = wrapped.target
        if target.startswith(":") or not target:
            raise _Unchecked(f"remote {name!r} wraps an on-the-fly backend (':backend:')")
        inner, inner_path = _split(target)
        # A path-keeping wrapper hands the path on; others (crypt, chunker...) store it below their target.
        sub = _join(inner_path, path) if wrapped.keeps_path and (inner_path or path) else inner_path
        if inner is None:
            if not sub.startswith("/"):
                raise _Unchecked(f"remote {name!r} wraps a relative folder")
            out.append(_join("/", sub))
        elif "," in inner:
            raise _Unchecked(f"remote {name!r} wraps a connection string ('remote,option=value:')")
        else:
            out.extend(_folders(remotes, inner, sub, (*seen, name)))
    return out


def reach(remotes: Mapping[str, Remote], name: str, path: str) -> Reach | None:
    """How `name:path` reaches the local disk, or None when it never does."""
    remote = remotes[name]
    if remote.is_local:
        return Reach(direct=True, folders=(), via="type local")
    try:
        folders = _folders(remotes, name, path, ())
    except _Unchecked as exc:
        return Reach(direct=False, folders=(), via=f"type {remote.type or 'unknown'}", problem=str(exc))
    if not folders:
        return None
    return Reach(direct=False, folders=tuple(folders), via=f"type {remote.type}, over a local folder")


@dataclass(frozen=True)
class Verdict:
    """What the sync server does with one `remote:path`."""

    local: bool  # it reaches the local disk
    refused: str | None = None  # why it may not be used: names the remote, and the setting when that would help
    direct: bool = False  # usable by rewriting its path into a path of the virtual root
    folders: tuple[Path, ...] = ()  # the host folders (symlinks resolved, inside the root) a wrapper touches


def judge(remotes: Mapping[str, Remote], name: str, path: str, policy: LocalRemotes, root: Path) -> Verdict:
    """The one rule for remotes: `root` is the virtual root's host path, already resolved."""
    found = reach(remotes, name, path)
    if found is None:
        return Verdict(local=False)
    if found.problem is not None:
        # Counted as local: what cannot be checked is treated as the worst it could be.
        return Verdict(local=True, refused=f"remote {name!r} may reach the local disk in a way that cannot be "
                                           f"checked ({found.problem}), so it is refused")
    if policy is LocalRemotes.REFUSE:
        return Verdict(local=True, refused=f"remote {name!r} reaches the local disk ({found.via}); such remotes "
                                           f"are refused unless {SETTING}=confine, which keeps their paths inside "
                                           "the virtual root")
    if found.direct:
        return Verdict(local=True, direct=True)
    folders = tuple(Path(os.path.realpath(f)) for f in found.folders)
    if not all(f.is_relative_to(root) for f in folders):
        return Verdict(local=True, refused=f"remote {name!r} stores data in a local folder outside the virtual "
                                           f"root, so it is refused (even with {SETTING}=confine)")
    return Verdict(local=True, folders=folders)
