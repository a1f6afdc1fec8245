"""The webhook sink: POST each revocation, HMAC-signed, to an admin's own systems.

The body is the full revocation JSON, admin reasons included: the receiver is the admin's, not
the end user's. Every action is sent, `lift` included (a receiver mirroring blocks, a WAF say,
undoes its own). Receivers verify with `producers.webhook_signature.verify` (the same code signs
here) and dedupe on `Sessionwatch-Revocation-Id`, since the applier delivers at least once.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import aiohttp
from yarl import URL

from producers.contract import Revocation, encode
from producers.errors import ConfigError
from producers.webhook_signature import (
    MIN_SECRET_BYTES,
    REVOCATION_ID_HEADER,
    SIGNATURE_HEADER,
    secret_bytes,
    sign,
)
from storage.sinks import RejectedError, RetryableError

# 408 and 429 say "later", 5xx says "not now"; 401/403 mean our secret or the receiver's
# configuration is wrong, which an operator fixes: the revocation must not be lost to any of them.
_RETRYABLE_4XX = frozenset({401, 403, 408, 429})
_BODY_EXCERPT_CHARS = 200


def public_url(url: str | URL) -> str:
    """`url` fit for logs and errors: no user:password, query string or fragment (they hold tokens)."""
    return str(URL(url).with_user(None).with_query(None).with_fragment(None))


async def body_excerpt(response: aiohttp.ClientResponse) -> str:
    # Bounded read: a receiver's error page can be megabytes, the message needs a line.
    raw = await response.content.read(4 * _BODY_EXCERPT_CHARS)
    return raw.decode("utf-8", errors="replace")[:_BODY_EXCERPT_CHARS]


class WebhookSink:
    """Sink `webhook`: one signed POST per revocation to `url`."""

    name = "webhook"

    def __init__(
        self,
        url: str,
        secret: bytes | str,
        timeout_s: float = 5.0,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        key = secret_bytes(secret)
        if len(key) < MIN_SECRET_BYTES:
            # Never echo the secret, not even its length beyond what the rule needs.
            raise ConfigError(
                f"webhook_secret is too short: it must be at least {MIN_SECRET_BYTES} bytes; "
                "generate one with `python -c 'import secrets; print(secrets.token_hex(32))'` "
                "and give the same value to the receiver"
            )
        target = URL(url)
        if target.scheme not in ("http", "https") or not target.host:
            raise ConfigError(f"webhook_url {public_url(url)!r} is not an http(s) URL")
        self.url = url
        self._public_url = public_url(url)
        self._secret = key
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._extra_headers = dict(extra_headers or {})
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"WebhookSink(url={self._public_url!r})"

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def deliver(self, revocation: Revocation, raw: bytes) -> bool:
        if self._session is None:
            raise RuntimeError("WebhookSink.deliver called before start(): the applier must start sinks")
        body = encode(revocation)
        # Signed at send time, not decision time: a retry hours later must still pass the
        # receiver's replay window.
        headers = {
            **self._extra_headers,  # first, so they can never replace the signature headers
            "Content-Type": "application/json",
            REVOCATION_ID_HEADER: revocation.id,
            SIGNATURE_HEADER: sign(self._secret, body, int(time.time())),
        }
        where = f"webhook {self._public_url}, revocation {revocation.id}"
        try:
            # No redirects: aiohttp would turn a redirected POST into a bodyless GET.
            async with self._session.post(self.url, data=body, headers=headers,
                                          allow_redirects=False) as response:
                status = response.status
                if 200 <= status < 300:
                    return True
                if status in _RETRYABLE_4XX or status >= 500:
                    raise RetryableError(f"{where}: HTTP {status}; will retry")
                if 300 <= status < 400:
                    # A moved endpoint is the operator's to fix; dropping revocations meanwhile
                    # would be wrong.
                    location = public_url(response.headers.get("Location", ""))
                    raise RetryableError(f"{where}: HTTP {status} redirect to {location!r}, not "
                                         "followed; set webhook_url to the final URL")
                excerpt = await body_excerpt(response)
                raise RejectedError(f"{where}: refused with HTTP {status}: {excerpt!r}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            # Connection refused, DNS, TLS, reset, timeout: the receiver is unavailable.
            kind = "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
            raise RetryableError(f"{where}: {kind}; will retry") from exc
