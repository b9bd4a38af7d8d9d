"""Object-store settings for a store rooted at ``s3://bucket/prefix``: one resolution of credentials,
region and endpoint shared by every library that touches the bucket (pyarrow's ``S3FileSystem`` for
documents, views and downloads; deltalake for the tables), and one translation of their errors.

Settings come from explicit ``storage_options`` first, then the usual AWS variables:
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION`` (or
``AWS_DEFAULT_REGION``), ``AWS_ENDPOINT_URL_S3`` (or ``AWS_ENDPOINT_URL``) and ``AWS_ALLOW_HTTP``.
The resolved options are what deltalake receives, so both libraries always talk to the same endpoint
with the same keys. Other option names (``AWS_S3_ADDRESSING_STYLE``, ``timeout``, ...) pass to deltalake
unchanged.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from featurestore.errors import (
    BucketNotFound,
    StorageAccessDenied,
    StorageError,
    StorageUnreachable,
)

SCHEMES = ("s3://", "s3a://")
CACHE_ENV = "FEATURESTORE_CACHE"  # the local folder for copies of object-store files (default ~/.cache/featurestore)

#: resolved option -> environment variables read for it, first found wins (explicit options win over all)
_FROM_ENV: dict[str, tuple[str, ...]] = {
    "AWS_ACCESS_KEY_ID": ("AWS_ACCESS_KEY_ID",),
    "AWS_SECRET_ACCESS_KEY": ("AWS_SECRET_ACCESS_KEY",),
    "AWS_SESSION_TOKEN": ("AWS_SESSION_TOKEN",),
    "AWS_REGION": ("AWS_REGION", "AWS_DEFAULT_REGION"),
    "AWS_ENDPOINT_URL": ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
    "AWS_ALLOW_HTTP": ("AWS_ALLOW_HTTP",),
}
#: other spellings accepted in explicit storage_options
_ALIASES = {
    "ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
    "SESSION_TOKEN": "AWS_SESSION_TOKEN", "TOKEN": "AWS_SESSION_TOKEN", "AWS_TOKEN": "AWS_SESSION_TOKEN",
    "REGION": "AWS_REGION", "AWS_DEFAULT_REGION": "AWS_REGION",
    "ENDPOINT": "AWS_ENDPOINT_URL", "ENDPOINT_URL": "AWS_ENDPOINT_URL", "AWS_ENDPOINT": "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3": "AWS_ENDPOINT_URL", "ALLOW_HTTP": "AWS_ALLOW_HTTP",
}
DEFAULT_REGION = "us-east-1"


def is_object_store(root: str) -> bool:
    return root.startswith(SCHEMES)


def split(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> (``bucket``, ``a/b``)."""
    rest = uri.split("://", 1)[1].strip("/")
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise StorageError(f"{uri!r} names no bucket: write s3://bucket/prefix")
    return bucket, prefix


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve(uri: str, explicit: dict[str, str] | None) -> dict[str, str]:
    """The storage options of ``uri``: explicit ones (any usual spelling), then the AWS variables, with
    a default region and ``AWS_ALLOW_HTTP`` for an ``http://`` endpoint on this machine."""
    opts: dict[str, str] = {}
    for key, value in (explicit or {}).items():
        upper = key.upper()
        opts[_ALIASES.get(upper, upper if upper in _FROM_ENV else key)] = str(value)
    for key, names in _FROM_ENV.items():
        if key not in opts:
            found = next((os.environ[n] for n in names if os.environ.get(n)), None)
            if found is not None:
                opts[key] = found
    opts.setdefault("AWS_REGION", DEFAULT_REGION)
    endpoint = opts.get("AWS_ENDPOINT_URL")
    if endpoint:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise StorageError(f"{uri}: the endpoint {endpoint!r} is not an http(s) URL "
                               f"(AWS_ENDPOINT_URL, e.g. http://127.0.0.1:9000)")
        if parts.scheme == "http" and "AWS_ALLOW_HTTP" not in opts:
            if not _loopback(parts.hostname):
                raise StorageError(f"{uri}: the endpoint {endpoint} is plain http; set AWS_ALLOW_HTTP=true to "
                                   f"allow unencrypted requests to it")
            opts["AWS_ALLOW_HTTP"] = "true"
    if ("AWS_ACCESS_KEY_ID" in opts) != ("AWS_SECRET_ACCESS_KEY" in opts):
        missing = "AWS_SECRET_ACCESS_KEY" if "AWS_ACCESS_KEY_ID" in opts else "AWS_ACCESS_KEY_ID"
        raise StorageAccessDenied(f"{uri}: {missing} is not set (give both keys, or neither to use the AWS "
                                  f"profile or instance role)")
    return opts


def filesystem(uri: str, opts: dict[str, str]) -> Any:
    """A pyarrow ``S3FileSystem`` with the same settings deltalake gets."""
    import pyarrow.fs as pafs

    kwargs: dict[str, Any] = {"region": opts["AWS_REGION"], "connect_timeout": 5.0, "request_timeout": 60.0,
                              "allow_bucket_creation": False, "allow_bucket_deletion": False}
    if "AWS_ACCESS_KEY_ID" in opts:
        kwargs.update(access_key=opts["AWS_ACCESS_KEY_ID"], secret_key=opts["AWS_SECRET_ACCESS_KEY"],
                      session_token=opts.get("AWS_SESSION_TOKEN"))
    endpoint = opts.get("AWS_ENDPOINT_URL")
    if endpoint:
        parts = urlsplit(endpoint)
        kwargs.update(endpoint_override=parts.netloc, scheme=parts.scheme)
    if opts.get("AWS_S3_ADDRESSING_STYLE", "").lower() == "virtual":
        kwargs["force_virtual_addressing"] = True
    try:
        return pafs.S3FileSystem(**kwargs)
    except (OSError, ValueError) as exc:
        raise StorageError(f"cannot open the object store of {uri}: {exc}") from exc


def cache_dir(uri: str) -> Path:
    """The local folder holding this store's downloaded (and written-through) files."""
    base = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "featurestore")
    return Path(base) / hashlib.sha256(uri.encode()).hexdigest()[:16]


_MISSING_BUCKET = ("NO_SUCH_BUCKET", "NoSuchBucket", "bucket does not exist")
_DENIED = ("ACCESS_DENIED", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "INVALID_ACCESS_KEY_ID",
           "SIGNATURE_DOES_NOT_MATCH", "403 Forbidden", "InvalidClientTokenId", "ExpiredToken",
           "credentials", "Forbidden")
_UNREACHABLE = ("NETWORK_CONNECTION", "Could not connect", "error sending request", "Connection refused",
                "connection refused", "dns error", "timed out", "Couldn't resolve host", "tcp connect error")


def translate(uri: str, opts: dict[str, str], what: str, exc: BaseException | str) -> StorageError:
    """The typed error for a failed object-store request (``what`` failed), naming the store and endpoint."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", " ".join(str(exc).split()))
    endpoint = opts.get("AWS_ENDPOINT_URL") or f"AWS S3 ({opts.get('AWS_REGION')})"
    bucket = split(uri)[0]
    if any(s in text for s in _MISSING_BUCKET):
        return BucketNotFound(f"{what}: the bucket {bucket!r} of {uri} does not exist at {endpoint}")
    if any(s in text for s in _UNREACHABLE):
        return StorageUnreachable(f"{what}: the object store of {uri} at {endpoint} does not answer "
                                  f"(check AWS_ENDPOINT_URL): {text[:200]}")
    if any(s in text for s in _DENIED):
        return StorageAccessDenied(f"{what}: {endpoint} refused the credentials for {uri} (check "
                                   f"AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or storage_options): {text[:200]}")
    return StorageError(f"{what}: {text[:400]}")
