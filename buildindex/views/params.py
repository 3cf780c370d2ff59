"""Parsing and checking what arrives in URLs: `repo:tag` references, repository names and
prefixes, paging parameters. Every refusal is a 400 with the usual `{"error": ...}` body
(build-index is not registry-facing, so not the OCI envelope)."""

from __future__ import annotations

from flask import request

from common import oci
from common.httputil import HTTPError


def check_repo(repo: str) -> str:
    try:
        return oci.check_name(repo)
    except oci.RegistryError as exc:
        raise HTTPError(400, exc.message, exc.code) from None


def check_tag(tag: str) -> str:
    # common.oci's TAG_RE uses Python's Unicode \w; the distribution grammar is ASCII.
    if not tag.isascii():
        raise HTTPError(400, f"invalid tag: {tag[:200]!r}", "TAG_INVALID")
    try:
        return oci.check_tag(tag)
    except oci.RegistryError as exc:
        raise HTTPError(400, exc.message, exc.code) from None


def split_tag(ref: str) -> tuple[str, str]:
    """`repo:tag` -> (repo, tag), split at the LAST ':' (Werkzeug has already decoded the
    %2F in `library%2Fbusybox:1`)."""
    repo, sep, tag = ref.rpartition(":")
    if not sep:
        raise HTTPError(400, f"tag must be repo:tag, got {ref[:200]!r}", "TAG_INVALID")
    return check_repo(repo), check_tag(tag)


def check_prefix(prefix: str) -> str:
    """A prefix must be able to begin some valid repository name, so hostile strings
    (`../../etc`, upper case, control characters) are refused rather than searched for."""
    if len(prefix) > oci.MAX_NAME or not oci.NAME_RE.match(prefix + "a"):
        raise HTTPError(400, f"invalid repository prefix: {prefix[:200]!r}", "NAME_INVALID")
    return prefix


def _int_arg(name: str, default: int, lo: int, hi: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw, 10)
    except ValueError:
        raise HTTPError(
            400, f"{name} must be an integer, got {raw[:50]!r}", "PAGINATION_NUMBER_INVALID"
        ) from None
    if not lo <= value <= hi:
        raise HTTPError(400, f"{name} must be between {lo} and {hi}", "PAGINATION_NUMBER_INVALID")
    return value


def paging(default_limit: int, max_limit: int) -> tuple[int, int]:
    """(limit, offset) from the query. An offset past the end is allowed (an empty page),
    but one that no store could reach is refused."""
    return _int_arg("limit", default_limit, 1, max_limit), _int_arg("offset", 0, 0, 2**31 - 1)
