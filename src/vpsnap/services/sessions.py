"""Dashboard sessions: sign in with email and password, authenticate the ``hostup_session``
cookie, sign out; and the CSRF rules every cookie-authenticated change must pass.

The cookie value is 256 random bits; the database keeps only its SHA-256, so any API process
(scale-out) accepts the cookie and a leaked database holds no usable session. A session ends
``idle`` after its last request or ``lifetime`` after sign-in (``SessionPolicy``), when the
user signs out, and at once when the user is disabled or their password changes.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from vpsnap.domain.auth import Principal
from vpsnap.domain.clock import Clock
from vpsnap.domain.errors import Unauthorized
from vpsnap.domain.ids import new_id
from vpsnap.domain.ports import Store
from vpsnap.domain.users import Session, SessionPolicy, User, normalize_email
from vpsnap.services.credentials import hash_secret
from vpsnap.services.passwords import Passwords

COOKIE_NAME = "hostup_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
SIGN_IN_FAILED = "The email or password is not right."
SESSION_ENDED = "Your session has ended. Sign in again."


class SignInFailed(Unauthorized):
    """Wrong password, unknown address or disabled user: one message for all three."""


class SessionEnded(Unauthorized):
    """No session, an unknown or expired one, or one whose user was disabled."""


@dataclass(frozen=True, slots=True)
class SignedIn:
    token: str
    """The cookie value: handed to the browser once, never stored."""
    session: Session
    user: User


@dataclass(frozen=True, slots=True)
class SessionContext:
    """An authenticated dashboard request: who, with which scopes, and its CSRF token."""

    session: Session
    user: User
    principal: Principal
    csrf_token: str


def csrf_token_for(session_token: str) -> str:
    """The per-session CSRF token: an HMAC of a fixed label keyed by the session secret.

    Derived rather than stored: it changes with every session (rotation at sign-in), and a
    page from another origin can neither read the cookie nor compute the token.
    """
    digest = hmac.new(session_token.encode(), b"hostup-csrf-v1", hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def csrf_token_matches(session_token: str, presented: str | None) -> bool:
    return presented is not None and hmac.compare_digest(csrf_token_for(session_token), presented)


_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of a URL, normalized (lowercase, default port dropped) as
    browsers send ``Origin`` (RFC 6454); None when it is not an http(s) URL."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def from_same_origin(origin: str | None, fetch_site: str | None, own_origin: str) -> bool:
    """Whether a browser request came from a page of ``own_origin``.

    ``Origin`` decides when it is sent (every browser sends it on a cross-origin POST, and on
    same-origin POSTs too); a foreign or ``null`` Origin is refused whatever else the request
    says. Without ``Origin``, ``Sec-Fetch-Site: same-origin`` is accepted. With neither, the
    request is refused: a browser that sends neither cannot be told apart from a forgery.
    """
    if origin is not None:
        return origin_of(origin) == origin_of(own_origin)
    return fetch_site is not None and fetch_site.strip().lower() == "same-origin"


def _session_token_hash(token: str) -> str:
    # 256 random bits: a fast hash suffices (nothing to brute-force), as for API keys.
    return hash_secret(token)


@dataclass(frozen=True, slots=True)
class SessionService:
    store: Store
    clock: Clock
    passwords: Passwords
    policy: SessionPolicy

    async def sign_in(self, email: str, password: str, *, replacing: str | None = None) -> SignedIn:
        """Check the password and open a new session (a new cookie value every time: the
        session id is rotated at sign-in). ``replacing`` is the cookie the browser still had;
        that session is ended. ``SignInFailed`` (one message) for every kind of failure.
        Throttling is the caller's (the panel counts failures per IP and per address)."""
        address = normalize_email(email)
        async with self.store.transaction(read_only=True) as tx:
            stored = await tx.find_user_by_email(address)
        if stored is None:
            await self.passwords.spend_like_verify(password)
            raise SignInFailed(SIGN_IN_FAILED)
        verified = await self.passwords.verify(stored.password_hash, password)
        if not verified.ok or not stored.user.is_active:
            raise SignInFailed(SIGN_IN_FAILED)
        now = self.clock.now()
        token = secrets.token_urlsafe(32)
        session = Session(
            id=new_id("ses"), user_id=stored.user.id, created_at=now, last_seen_at=now
        )
        async with self.store.transaction() as tx:
            if replacing:
                old = await tx.find_session(_session_token_hash(replacing))
                if old is not None:
                    await tx.delete_session(old.session.id)
            if verified.new_hash is not None:
                await tx.set_user_password(stored.user.id, verified.new_hash)
            await tx.add_session(session, _session_token_hash(token))
        return SignedIn(token=token, session=session, user=stored.user)

    async def authenticate(self, token: str) -> SessionContext:
        """The session behind a cookie value; ``SessionEnded`` when there is none any more.

        Looked up on every request (no cache), so a disabled user or a sign-out elsewhere
        takes effect at once. ``last_seen_at`` is rewritten at most every
        ``policy.touch_interval``.
        """
        now = self.clock.now()
        async with self.store.transaction(read_only=True) as tx:
            found = await tx.find_session(_session_token_hash(token))
        if found is None or not found.user.is_active:
            raise SessionEnded(SESSION_ENDED)
        session = found.session
        if not session.is_live(now, self.policy):
            async with self.store.transaction() as tx:
                await tx.delete_session(session.id)
            raise SessionEnded(SESSION_ENDED)
        if now - session.last_seen_at >= self.policy.touch_interval:
            async with self.store.transaction() as tx:
                await tx.touch_session(session.id, now)
            session = dataclasses.replace(session, last_seen_at=now)
        user = found.user
        principal = Principal(account_id=user.account_id, scopes=user.scopes, user_id=user.id)
        return SessionContext(session, user, principal, csrf_token_for(token))

    async def sign_out(self, token: str) -> None:
        async with self.store.transaction() as tx:
            found = await tx.find_session(_session_token_hash(token))
            if found is not None:
                await tx.delete_session(found.session.id)

    async def purge(self) -> int:
        """Delete sessions that have ended (the scheduler's housekeeping calls this)."""
        now = self.clock.now()
        async with self.store.transaction() as tx:
            return await tx.purge_sessions(now - self.policy.idle, now - self.policy.lifetime)
