"""Logins for the review server: server-side sessions, CSRF tokens, rate-limited logins.

* A session is a random token in an ``HttpOnly``, ``SameSite=Strict`` cookie (``Secure``
  over https, or when configured); the server keeps only the token's sha256, in memory
  and bounded (a restart logs everyone out). Sessions end after ``idle_s`` without a
  request, after ``max_age_s`` in any case, and within ``recheck_s`` of the user being
  disabled in the store.
* CSRF: every state-changing request carries the session's token in ``X-CSRF-Token``
  (double submit: the page reads it from a readable cookie); the login form does the
  same with a pre-login token. Requests whose ``Origin`` or ``Sec-Fetch-Site`` says they
  come from another site are refused as well.
* Logins are rate limited per client address (all attempts, oversized bodies included)
  and slowed per user name *and* address: after ``free_failures`` failed attempts each
  further one must wait twice as long as the last (``backoff_s``, 2x, ... up to
  ``max_backoff_s``). Attempts during the wait are refused without checking the
  password; the right password always works once the wait has passed, and someone
  guessing from another address never delays the real user. In memory, with a
  bounded number of keys; failures are forgotten ``forget_s`` after the last one.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from geoscreen.review.records import ROLES, User

SESSION_COOKIE = "geoscreen_session"
LOGIN_CSRF_COOKIE = "geoscreen_login_csrf"
CSRF_HEADER = "x-csrf-token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_VIEWS_REMEMBERED = 10_000
Clock = Callable[[], float]


@dataclass(frozen=True)
class AuthSettings:
    """Session lifetime, cookie and login-limit settings.

    ``secure_cookies``: ``None`` sets ``Secure`` when the request came over https;
    ``trusted_proxies``: addresses or networks whose ``X-Forwarded-For`` is believed;
    ``max_body_bytes``: the largest request body read.
    """

    secure_cookies: bool | None = None
    idle_s: float = 8 * 3600
    max_age_s: float = 24 * 3600
    recheck_s: float = 10.0
    max_sessions: int = 10_000
    ip_attempts: int = 30
    window_s: float = 300.0
    free_failures: int = 3
    backoff_s: float = 1.0
    max_backoff_s: float = 900.0
    forget_s: float = 24 * 3600.0
    max_limited_keys: int = 10_000
    trusted_proxies: tuple[str, ...] = ()
    max_body_bytes: int = 64 * 1024


@dataclass
class Session:
    """A logged-in user; ``role`` is re-read from the store every ``recheck_s``."""

    user: str
    role: str
    csrf: str
    created: float
    last_seen: float
    checked: float
    viewed: set[tuple[int, str]] = field(default_factory=set)

    def has_role(self, role: str) -> bool:
        """Whether the user's role is ``role`` or above."""
        return ROLES.index(self.role) >= ROLES.index(role)

    def first_view(self, candidate_id: int, what: str) -> bool:
        """True the first time this session looks at ``what`` of a candidate."""
        key = (candidate_id, what)
        if key in self.viewed:
            return False
        if len(self.viewed) >= MAX_VIEWS_REMEMBERED:
            self.viewed.clear()
        self.viewed.add(key)
        return True


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A random URL-safe token (256 bits)."""
    return secrets.token_urlsafe(32)


def tokens_match(given: str | None, expected: str | None) -> bool:
    """Constant-time comparison; missing tokens never match."""
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


class SessionStore:
    """Sessions by token digest, oldest evicted first beyond ``max_sessions``."""

    def __init__(self, settings: AuthSettings, clock: Clock = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self, user: User) -> tuple[str, Session]:
        """A new session for ``user``; returns the cookie token and the session."""
        token = new_token()
        now = self.clock()
        session = Session(user.name, user.role, new_token(), now, now, now)
        with self._lock:
            self._sessions[_digest(token)] = session
            while len(self._sessions) > self.settings.max_sessions:
                self._sessions.popitem(last=False)
        return token, session

    def get(self, token: str | None) -> Session | None:
        """The live session for a cookie token (expired ones are dropped)."""
        if not token:
            return None
        key = _digest(token)
        now = self.clock()
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                return None
            idle = now - session.last_seen > self.settings.idle_s
            if idle or now - session.created > self.settings.max_age_s:
                del self._sessions[key]
                return None
            session.last_seen = now
            return session

    def drop(self, token: str | None) -> None:
        """End a session (logout)."""
        if token:
            with self._lock:
                self._sessions.pop(_digest(token), None)

    def drop_user(self, name: str) -> int:
        """End every session of a user (disabled or removed); returns how many."""
        with self._lock:
            keys = [k for k, s in self._sessions.items() if s.user == name]
            for key in keys:
                del self._sessions[key]
        return len(keys)


class RateLimiter:
    """At most ``limit`` hits per key in a sliding ``window_s``; at most ``max_keys`` keys."""

    def __init__(
        self, limit: int, window_s: float, max_keys: int = 10_000, clock: Clock = time.monotonic
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_keys = max_keys
        self.clock = clock
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._hits)

    def retry_after(self, key: str) -> float:
        """Seconds until ``key`` may try again (0 when it may now)."""
        now = self.clock()
        with self._lock:
            hits = self._hits.get(key)
            if hits is None:
                return 0.0
            self._expire(hits, now)
            if len(hits) < self.limit:
                return 0.0
            return max(hits[0] + self.window_s - now, 0.001)

    def hit(self, key: str) -> None:
        """Count one attempt for ``key``."""
        now = self.clock()
        with self._lock:
            hits = self._hits.pop(key, None) or deque()
            self._expire(hits, now)
            hits.append(now)
            while len(hits) > self.limit:
                hits.popleft()
            self._hits[key] = hits  # most recently used last
            while len(self._hits) > self.max_keys:
                self._hits.popitem(last=False)

    def reset(self, key: str) -> None:
        """Forget ``key`` (e.g. after a successful login)."""
        with self._lock:
            self._hits.pop(key, None)

    def _expire(self, hits: deque[float], now: float) -> None:
        while hits and hits[0] <= now - self.window_s:
            hits.popleft()


class Backoff:
    """Exponential back-off per key: after ``free`` failures, wait ``base_s`` * 2**(n - free)."""

    def __init__(self, settings: AuthSettings, clock: Clock = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._failures)

    def delay(self, failures: int) -> float:
        """How long to wait after ``failures`` failures in a row."""
        over = failures - self.settings.free_failures
        if over < 0:
            return 0.0
        return min(self.settings.backoff_s * 2.0 ** min(over, 64), self.settings.max_backoff_s)

    def retry_after(self, key: str) -> float:
        """Seconds until ``key`` may try again (0 when it may now)."""
        now = self.clock()
        with self._lock:
            failures, last = self._live(key, now)
        if not failures:
            return 0.0
        wait = last + self.delay(failures) - now
        return max(wait, 0.001) if wait > 0 else 0.0

    def failed(self, key: str) -> None:
        """Count one failure for ``key``."""
        now = self.clock()
        with self._lock:
            failures, _ = self._live(key, now)
            self._failures.pop(key, None)
            self._failures[key] = (failures + 1, now)  # most recently failed last
            while len(self._failures) > self.settings.max_limited_keys:
                self._failures.popitem(last=False)

    def reset(self, key: str) -> None:
        """Forget ``key`` (after a successful login)."""
        with self._lock:
            self._failures.pop(key, None)

    def _live(self, key: str, now: float) -> tuple[int, float]:
        failures, last = self._failures.get(key, (0, now))
        if failures and now - last > self.settings.forget_s:
            del self._failures[key]
            return 0, now
        return failures, last


class LoginLimits:
    """The login limits: all attempts per client address, back-off per name and address."""

    def __init__(self, settings: AuthSettings, clock: Clock = time.monotonic) -> None:
        keys = settings.max_limited_keys
        self.by_ip = RateLimiter(settings.ip_attempts, settings.window_s, keys, clock)
        self.backoff = Backoff(settings, clock)

    @staticmethod
    def _key(ip: str, user: str) -> str:
        return f"{user.casefold()}\0{ip}"

    def address_wait(self, ip: str) -> float:
        """Seconds before this address may try any login."""
        return self.by_ip.retry_after(ip)

    def retry_after(self, ip: str, user: str) -> float:
        """Seconds to wait before this address may try this user name."""
        return max(self.by_ip.retry_after(ip), self.backoff.retry_after(self._key(ip, user)))

    def attempt(self, ip: str) -> None:
        """Count an attempt from an address."""
        self.by_ip.hit(ip)

    def failed(self, ip: str, user: str) -> None:
        """Count a failed attempt for a user name from an address."""
        self.backoff.failed(self._key(ip, user))

    def succeeded(self, ip: str, user: str) -> None:
        """Clear the failures of a user name from an address."""
        self.backoff.reset(self._key(ip, user))
