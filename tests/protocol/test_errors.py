"""Error codes: unique, named, and translated at the edge without host paths."""

from __future__ import annotations

import errno

from llmbasedos.protocol import errors


def test_codes_are_unique_and_in_range():
    classes = [getattr(errors, n) for n in errors.__all__ if isinstance(getattr(errors, n), type)]
    # A refinement of an error (NestingTooDeep of InvalidRequest) carries its parent's code; the rest differ.
    codes = [c.code for c in classes if c.__bases__ == (errors.RPCError,)]
    assert len(codes) == len(set(codes))
    assert all(c.code == c.__bases__[0].code for c in classes if c.__bases__ != (errors.RPCError,)
               and c is not errors.RPCError)
    for code in codes:
        # -32800 is LSP's RequestCancelled, kept for familiarity; everything else is JSON-RPC's reserved range.
        assert -32768 <= code <= -32000 or code == errors.CANCELLED


def test_to_error_includes_data_only_when_present():
    assert errors.NotFound("x").to_error() == {"code": errors.NOT_FOUND, "message": "x"}
    assert errors.RateLimited(data={"retry_after": 3}).to_error() == {
        "code": errors.RATE_LIMITED, "message": "Rate limit exceeded", "data": {"retry_after": 3}}


def test_from_oserror_drops_host_path():
    exc = FileNotFoundError(errno.ENOENT, "No such file or directory", "/secret/host/place")
    err = errors.from_oserror(exc, "/docs/a.txt")
    assert isinstance(err, errors.NotFound)
    assert err.message == "No such file or directory: /docs/a.txt"
    assert "/secret" not in err.message
    assert isinstance(errors.from_oserror(OSError(errno.ENOTEMPTY, "Directory not empty")), errors.Conflict)
    assert isinstance(errors.from_oserror(OSError(12345, "odd")), errors.InternalError)


def test_from_error_object_round_trip():
    err = errors.from_error_object({"code": errors.QUOTA_EXCEEDED, "message": "used up", "data": {"retry_after": 9}})
    assert isinstance(err, errors.QuotaExceeded) and err.data == {"retry_after": 9}
    unknown = errors.from_error_object({"code": -32099, "message": "custom"})
    assert unknown.code == -32099 and unknown.message == "custom"
    assert isinstance(errors.from_error_object("junk"), errors.InternalError)
