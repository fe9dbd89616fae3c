"""What the guard checks before any route parses a request: body size, Unicode, client address.

* Bodies: every JSON body of this API is small (a login, a note of at most 4,000
  characters), so a body over ``MAX_BODY`` bytes is refused with 413 before it is read
  (by its ``Content-Length``) or as soon as more than that has arrived (chunked
  uploads); what is accepted is buffered here and replayed to the route.
* Unicode: a body must be UTF-8, and JSON string escapes must not decode to lone UTF-16
  surrogates (``"\\ud800"``), which no store or password hash can encode: both are
  refused with 400 instead of failing deep inside a route.
* Client address: ``X-Forwarded-For`` and ``X-Forwarded-Proto`` are believed only when
  the connection comes from a configured proxy; otherwise anyone could pick the address
  the login limits count.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import re
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from typing import Any

from geoscreen.errors import ConfigError

MAX_BODY = 64 * 1024
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class BodyRefused(Exception):
    """A request body the server will not parse: the status code, message and fix."""

    def __init__(self, status: int, message: str, fix: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.fix = fix


class ClientGone(Exception):
    """The client disconnected before sending its whole body."""


def too_large(limit: int) -> BodyRefused:
    """The refusal for a body over ``limit`` bytes."""
    return BodyRefused(
        413,
        "request body too large",
        f"Send at most {limit // 1024} KiB (notes: 4,000 characters).",
    )


def declared_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    """The ``Content-Length`` a request declares (None when absent or unreadable)."""
    for name, value in headers:
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def read_body(receive: Receive, limit: int = MAX_BODY) -> bytes:
    """The whole body, refused as soon as more than ``limit`` bytes have arrived."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def check_text(body: bytes) -> None:
    """Refuse a body that is not UTF-8 or whose JSON holds a lone surrogate."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BodyRefused(400, "request body is not valid UTF-8", "Send UTF-8 JSON.") from None
    if not _SURROGATE_ESCAPE.search(text):
        return
    try:
        value = json.loads(text)
    except ValueError:  # not JSON: the route answers 422
        return
    try:  # paired surrogate escapes decode to one character and encode fine
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise BodyRefused(
            400, "request body holds an invalid Unicode escape (a lone surrogate)",
            "Send text as valid Unicode.",
        ) from None  # fmt: skip


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands out ``body`` once, then waits on the real one."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """Proxy addresses or networks (``10.0.0.5``, ``10.0.0.0/24``, ``::1``)."""
    found = []
    for value in values:
        try:
            found.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ConfigError(
                f"not an IP address or network: {value!r}",
                where="--trusted-proxy",
                fix="Give the proxy's address, e.g. 127.0.0.1 or 10.0.0.0/24.",
            ) from None
    return tuple(found)


def _trusted(host: str, networks: Sequence[Network]) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in net for net in networks)


def _header(scope: MutableMapping[str, Any], name: bytes) -> list[str]:
    values = [v.decode("latin-1") for k, v in scope.get("headers", ()) if k.lower() == name]
    return [item.strip() for item in ",".join(values).split(",") if item.strip()]


def resolve_client(scope: MutableMapping[str, Any], proxies: Sequence[Network]) -> str:
    """The client address, following ``X-Forwarded-For`` only through trusted proxies.

    The address (and ``X-Forwarded-Proto``'s scheme) replaces the scope's, so routes see
    it as ``request.client``. The right-most forwarded address that is not itself a
    trusted proxy is the client: entries left of it were written by the client.
    """
    client = scope.get("client")
    host = str(client[0]) if client else "unknown"
    if not proxies or not _trusted(host, proxies):
        return host
    chain = _header(scope, b"x-forwarded-for")
    hops = [hop for hop in reversed(chain) if not _trusted(hop, proxies)] or chain[:1]
    if hops:  # garbage from the proxy: count the proxy itself
        with contextlib.suppress(ValueError):
            host = str(ipaddress.ip_address(hops[0]))
    scope["client"] = (host, 0)
    scheme = _header(scope, b"x-forwarded-proto")
    if scheme and scheme[-1].lower() in ("http", "https"):
        scope["scheme"] = scheme[-1].lower()
    return host
