"""URLs and credentials: recognise URLs, strip and scrub secrets, parse options.

Credentials reach tilesky in a URL's user info, in a signed URL's query or
in the fsspec storage options. None of them may appear in an identity, a
log line or an error message: :func:`strip_credentials` removes them from a
URL shown to the user, :func:`secret_values` and :func:`scrub` remove them
from any other text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from tilesky.errors import InputError

__all__ = [
    "bounded_options",
    "is_url",
    "parse_storage_options",
    "probe_object_store",
    "raise_clean",
    "scrub",
    "secret_values",
    "strip_credentials",
]

_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
# user:password@ (the password may hold "/") or user@ right after the scheme.
_USERINFO_RE = re.compile(
    r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?:[^@/?#]*:[^@]*@|[^@/?#:]*@)"
)
_SECRET_QUERY_RE = re.compile(
    r"(?i)^(x-amz-|x-goog-|x-ms-)|sig|token|secret|passw|pwd|key|credential|auth|session|policy|^(se|sp|sv|sr|st|spr)$"
)
_SECRET_KEY_RE = re.compile(r"(?i)key|secret|token|passw|credential|auth|sas|sig")
_INT_RE = re.compile(r"^[+-]?\d+$")
_FLOAT_RE = re.compile(r"^[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?$")


def is_url(path: Any) -> bool:
    """Return True if ``path`` is a URL (``scheme://...``, fsspec chains too).

    Parameters
    ----------
    path : object
        A path, URL or anything else (which is not a URL).

    Returns
    -------
    bool
        Whether ``path`` is a string (or bytes) with a URL scheme.

    Examples
    --------
    >>> is_url("s3://bucket/mosaic.zarr"), is_url("/data/image.fits")
    (True, False)
    """
    if isinstance(path, bytes):
        path = path.decode(errors="replace")
    if not isinstance(path, str):
        return False
    if _URL_RE.match(path):
        return True
    return "::" in path and any(_URL_RE.match(part) for part in path.split("::"))


def strip_credentials(url: str) -> str:
    """Remove user, password and secret query parameters from a URL.

    Parameters
    ----------
    url : str
        A URL or path (returned unchanged); fsspec chains (``a::b``) are
        cleaned part by part.

    Returns
    -------
    str
        The URL without credentials.

    Examples
    --------
    >>> strip_credentials("s3://AKIA:se/cret@bucket/x.zarr")
    's3://bucket/x.zarr'
    >>> strip_credentials("https://host/x.fits?X-Amz-Signature=abc&version=2")
    'https://host/x.fits?version=2'
    """
    if "::" in url:
        return "::".join(strip_credentials(part) for part in url.split("::"))
    if not _URL_RE.match(url):
        return url
    url = _USERINFO_RE.sub(r"\g<scheme>", url)
    parts = urlsplit(url)
    if not parts.query:
        return url
    kept = [
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if not _SECRET_QUERY_RE.search(k)
    ]
    return urlunsplit(parts._replace(query=urlencode(kept)))


def parse_storage_options(pairs: list[str] | tuple[str, ...] | None) -> dict:
    """Turn ``key=value`` strings into fsspec storage options.

    Values that look like a bool (``true``/``false``, any case), an int or a
    float become one; dotted keys make nested dicts
    (``client_kwargs.region_name=eu-west-1``).

    Parameters
    ----------
    pairs : list of str, optional
        ``key=value`` strings (``--storage-option`` values).

    Returns
    -------
    dict
        The options, nested by dotted keys.

    Examples
    --------
    >>> parse_storage_options(["anon=false", "client_kwargs.region_name=eu-west-1"])
    {'anon': False, 'client_kwargs': {'region_name': 'eu-west-1'}}
    """
    options: dict[str, Any] = {}
    for pair in pairs or ():
        key, sep, raw = str(pair).partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            msg = (
                f"storage option {pair!r} is not key=value; "
                "write it like endpoint_url=http://host:9000"
            )
            raise InputError(msg)
        node = options
        *parents, leaf = key.split(".")
        for name in parents:
            child = node.get(name)
            if not isinstance(child, dict):
                child = node[name] = {}
            node = child
        node[leaf] = _parse_scalar(raw.strip())
    return options


#: Bounded waits for S3 calls. s3fs retries a timed-out call 5 times on its
#: own; under it botocore's defaults (60 s reads, 5 legacy attempts) made a
#: call to an endpoint that never answers wait 25 minutes. Here botocore
#: makes one attempt, so a call fails after about 5 x 15 s. Any value the
#: user gives wins.
S3_BOUNDS: dict[str, Any] = {
    "config_kwargs": {
        "connect_timeout": 10,
        "read_timeout": 15,
        "retries": {"max_attempts": 1, "mode": "standard"},
    },
}


def bounded_options(url: str, options: Mapping | None) -> dict:
    """``options`` with connect and read timeouts, one attempt, for ``s3://``.

    Parameters
    ----------
    url : str
        The path or URL the options are for.
    options : mapping, optional
        The user's fsspec storage options.

    Returns
    -------
    dict
        A copy, with :data:`S3_BOUNDS` under the user's own values for S3
        URLs; unchanged for anything else.

    Examples
    --------
    >>> opts = bounded_options("s3://b/x.zarr", {"config_kwargs": {"read_timeout": 5}})
    >>> opts["config_kwargs"]["read_timeout"], opts["config_kwargs"]["connect_timeout"]
    (5, 10)
    >>> bounded_options("/data/x.zarr", {"anon": True})
    {'anon': True}
    """
    merged = dict(options or {})
    if not re.match(r"(?i)^s3a?://", str(url)):
        return merged
    for key, value in S3_BOUNDS.items():
        if isinstance(value, dict) and isinstance(merged.get(key, {}), Mapping):
            merged[key] = {**value, **dict(merged.get(key) or {})}
        else:
            merged.setdefault(key, value)
    return merged


def probe_object_store(url: str, options: Mapping) -> None:
    """Refuse, in bounded time, an S3 endpoint that accepts and never answers.

    One request (the object's ``info``), one attempt, on its own thread: the
    later calls each retry 5 times (s3fs), and a run makes many of them,
    so an endpoint that never answers would otherwise hold the run for
    minutes. Any answer, even "not found" or "access denied", passes: the
    opening that follows reports it.

    Parameters
    ----------
    url : str
        The ``s3://`` URL (other URLs are not probed).
    options : mapping
        Its storage options, with :func:`bounded_options` applied.
    """
    if not re.match(r"(?i)^s3a?://", str(url)):
        return
    import threading

    import fsspec.asyn

    config = options.get("config_kwargs") or {}
    wait = float(config.get("connect_timeout", 10)) + float(
        config.get("read_timeout", 15)
    )
    outcome: dict[str, BaseException] = {}

    def probe() -> None:
        try:
            import s3fs

            fs = s3fs.S3FileSystem(**dict(options), skip_instance_cache=True)
            fs.retries = 1
            try:
                fs.info(str(url).split("://", 1)[1].rstrip("/"))
            finally:
                # Its own session: closed here, not left to the interpreter.
                if getattr(fs, "_s3", None) is not None:
                    fsspec.asyn.sync(fs.loop, fs._s3.__aexit__, None, None, None)
        except BaseException as exc:  # judged below
            outcome["error"] = exc

    thread = threading.Thread(target=probe, name="tilesky-s3-probe", daemon=True)
    thread.start()
    thread.join(wait + 5)
    error = outcome.get("error")
    timed_out = thread.is_alive() or _is_timeout(error)
    if timed_out:
        endpoint = options.get("endpoint_url") or "AWS S3"
        msg = (
            f"the object store at {endpoint} (for {strip_credentials(url)!r}) did "
            f"not answer within {wait:g} s (connect and read timeouts); check "
            "endpoint_url= and the network"
        )
        raise InputError(msg)


def _is_timeout(error: BaseException | None) -> bool:
    """True for a connect or read timeout, however s3fs and botocore wrap it."""
    while error is not None:
        name = type(error).__name__
        if isinstance(error, TimeoutError) or "Timeout" in name:
            return True
        if "timeout" in str(error).lower() and "Error" in name:
            return True
        error = error.__cause__ or error.__context__
    return False


def _parse_scalar(text: str) -> Any:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if _INT_RE.match(text):
        return int(text)
    if _FLOAT_RE.match(text):
        return float(text)
    return text


def secret_values(url: str, options: Mapping) -> tuple[str, ...]:
    """The strings that must never appear in a message, longest first.

    Parameters
    ----------
    url : str
        Path or URL (fsspec chains too) whose user info and signed query
        may hold credentials.
    options : Mapping
        fsspec storage options; string values under a key that looks like
        a credential (``key``, ``secret``, ``token``...) count, nested too.

    Returns
    -------
    tuple of str
        The secrets of at least four characters, longest first, so that
        :func:`scrub` replaces a secret before any secret it contains.

    Examples
    --------
    >>> secret_values("s3://me:pa55word@bucket/x.zarr", {"secret": "wJalr"})
    ('pa55word', 'wJalr')
    """
    found: set[str] = set()

    def walk(node: Any, sensitive: bool) -> None:
        if isinstance(node, Mapping):
            for k, v in node.items():
                walk(v, sensitive or bool(_SECRET_KEY_RE.search(str(k))))
        elif isinstance(node, str) and sensitive and len(node) >= 4:
            found.add(node)

    walk(options, False)
    for part in str(url).split("::"):
        m = _USERINFO_RE.match(part)
        if m:
            userinfo = part[len(m.group("scheme")) : m.end() - 1]
            found.update(p for p in userinfo.split(":", 1) if len(p) >= 4)
        query = urlsplit(part).query if _URL_RE.match(part) else ""
        for k, v in parse_qsl(query, keep_blank_values=True):
            if _SECRET_QUERY_RE.search(k) and len(v) >= 4:
                found.add(v)
    return tuple(sorted(found, key=len, reverse=True))


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    """Replace each of ``secrets`` in ``text`` by ``***``.

    Examples
    --------
    >>> scrub("403 for key AKIAEXAMPLE", ("AKIAEXAMPLE",))
    '403 for key ***'
    """
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def raise_clean(msg: str, exc: BaseException, secrets: tuple[str, ...]) -> None:
    """Raise :class:`InputError` with ``msg`` scrubbed of ``secrets``.

    The error is chained to ``exc`` only when ``msg`` held no secret: when it
    did, the secret came from the cause's own text, which a traceback would
    show again.
    """
    clean = scrub(msg, secrets)
    if clean != msg:
        # The cause's own text holds the credential: do not chain it.
        raise InputError(clean) from None
    raise InputError(msg) from exc
