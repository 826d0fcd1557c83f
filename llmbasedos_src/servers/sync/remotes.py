"""The remotes an rclone.conf defines: names and types only, never any other key (they hold secrets)."""

from __future__ import annotations

import configparser
import re
from dataclasses import dataclass
from pathlib import Path

from ...protocol import errors

__all__ = ["Remote", "read_remotes", "REMOTE_NAME_RE"]

# Narrower than what rclone accepts: no ',' (connection-string overrides), no ':' (on-the-fly backends),
# no leading '-' or space, so a name from the file can never turn into something else on rclone's command line.
REMOTE_NAME_RE = re.compile(r"^[\w.@+][\w.@+ -]{0,127}$")

# rclone.conf has no DEFAULT section; an improbable name keeps configparser from merging a [DEFAULT]
# section's keys (or secrets) into every remote.
_NO_DEFAULT = "\x00llmbasedos-no-default\x00"
_ENCRYPTED_MARK = "RCLONE_ENCRYPT_V0:"


@dataclass(frozen=True)
class Remote:
    name: str
    type: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "type": self.type}


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
        rtype = parser.get(name, "type", fallback="")
        remotes[name] = Remote(name, rtype.strip())
    return remotes
