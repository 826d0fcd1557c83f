"""The remotes an rclone.conf defines: names and types for clients, never any other key (they hold secrets).

Besides name and type, a remote keeps what the sync server needs to tell whether it reaches the local disk
(see local_remotes.py): the remotes or folders a wrapping backend stores its data in (`remote = ...`,
`upstreams = ...`) and whether it follows symlinks. Those are read from the file, never shown to a client.
"""

from __future__ import annotations

import configparser
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from llmbasedos.protocol import errors

__all__ = ["Remote", "Wrapped", "read_remotes", "REMOTE_NAME_RE"]

# Narrower than what rclone accepts: no ',' (connection-string overrides), no ':' (on-the-fly backends),
# no leading '-' or space, so a name from the file can never turn into something else on rclone's command line.
REMOTE_NAME_RE = re.compile(r"^[\w.@+][\w.@+ -]{0,127}$")

# rclone.conf has no DEFAULT section; an improbable name keeps configparser from merging a [DEFAULT]
# section's keys (or secrets) into every remote.
_NO_DEFAULT = "\x00llmbasedos-no-default\x00"
_ENCRYPTED_MARK = "RCLONE_ENCRYPT_V0:"
# Backends whose path is handed on unchanged to what they wrap: `alias:sub` is `<remote>/sub`.
_PATH_KEEPING = frozenset({"alias", "union"})
_UNION_SUFFIXES = (":ro", ":nc", ":writeback")
_TRUE = frozenset({"true", "1", "yes", "on"})


@dataclass(frozen=True)
class Wrapped:
    """One place a wrapping remote stores its data: `target` as rclone.conf writes it (`remote:path`,
    `:backend:path` or a plain folder), and whether the client's path is appended to it unchanged."""

    target: str
    keeps_path: bool


@dataclass(frozen=True)
class Remote:
    name: str
    type: str
    wraps: tuple[Wrapped, ...] = ()
    copy_links: bool = False  # a local remote that follows symlinks, wherever they point

    @property
    def is_local(self) -> bool:
        """`type = local`, spelled in any case: reading it more widely than rclone can only refuse more."""
        return self.type.strip().lower() == "local"

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "type": self.type}


def _upstreams(rtype: str, value: str) -> list[str]:
    try:
        items = shlex.split(value)
    except ValueError:
        items = [value]  # unbalanced quotes: kept whole, so it names no known remote and is refused
    out = []
    for item in items:
        if rtype.lower() == "combine":
            # `dir=remote:path`: the '=' before any ':' separates the folder name the client sees.
            eq, colon = item.find("="), item.find(":")
            if eq != -1 and (colon == -1 or eq < colon):
                item = item[eq + 1:]
        for suffix in _UNION_SUFFIXES:
            if item.endswith(suffix):
                item = item[: -len(suffix)]
        out.append(item)
    return out


def _remote(name: str, section: configparser.SectionProxy) -> Remote:
    rtype = section.get("type", fallback="").strip()
    wraps: list[Wrapped] = []
    # Any backend with these keys wraps another (alias, crypt, chunker, hasher, compress, cache, union,
    # combine, and whatever rclone adds later): reading them by key rather than by type misses none.
    if "remote" in section:
        wraps.append(Wrapped(section["remote"].strip(), rtype.lower() in _PATH_KEEPING))
    if "upstreams" in section:
        keeps = rtype.lower() in _PATH_KEEPING
        wraps.extend(Wrapped(u, keeps) for u in _upstreams(rtype, section["upstreams"]))
    copy_links = section.get("copy_links", fallback="").strip().lower() in _TRUE
    return Remote(name, rtype, tuple(wraps), copy_links)


def read_remotes(conf: Path) -> dict[str, Remote]:
    """Remotes by name, read fresh each time so edits to the file apply without a restart.

    A missing file means no remotes. A file rclone would not read either is FeatureUnavailable, with a
    message that names neither the file's host path nor any of its content.
    """
    try:
        text = conf.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise errors.FeatureUnavailable("rclone.conf cannot be read") from exc
    if _ENCRYPTED_MARK in text:
        raise errors.FeatureUnavailable("rclone.conf is encrypted; the sync service needs a plain one")
    parser = configparser.ConfigParser(interpolation=None, strict=False, default_section=_NO_DEFAULT)
    try:
        parser.read_string(text, source="rclone.conf")
    except configparser.Error as exc:
        raise errors.FeatureUnavailable("rclone.conf is not a valid INI file") from exc
    remotes: dict[str, Remote] = {}
    for name in parser.sections():
        if not REMOTE_NAME_RE.match(name):
            continue  # a name rclone could misread is never offered, so it can never be used
        remotes[name] = _remote(name, parser[name])
    return remotes
