"""Enrolled per-client credentials, kept hashed at rest.

A federation with a ``credentials_file`` admits only enrolled clients: each
has a name and a secret that ``orchard-server enroll`` generated and printed
once. The file holds ``{name: hash}`` in JSON, the hash being scrypt
(RFC 7914) of the secret with a random salt, so a stolen file does not let
anyone join. A client proves its name either with the token ``NAME:SECRET``
(``--auth-token``) or, under mutual TLS, with a certificate whose identity is
an enrolled name. Verification compares digests in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from orchard_server.storage import atomic_write_json

#: scrypt cost: about 10-20 ms per check here, paid once per join.
_N, _R, _P = 1 << 13, 8, 1
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")


class CredentialsError(ValueError):
    """A credentials file or name is unusable; the message says which and why."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_secret(secret: str) -> str:
    """``scrypt$N$r$p$salt$hash`` of ``secret`` with a fresh random salt."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def verify_secret(secret: str, stored: str) -> bool:
    """Whether ``secret`` matches the ``stored`` hash (digests compared in constant time)."""
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        want = _unb64(digest)
        got = hashlib.scrypt(
            secret.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p), dklen=len(want)
        )
    except ValueError:
        return False
    return hmac.compare_digest(got, want)


def check_name(name: str) -> str:
    """``name`` if it can be enrolled (letters, digits, ``._@-``; up to 128 characters)."""
    if not _NAME.fullmatch(name):
        raise CredentialsError(
            f"client name {name[:40]!r} must be 1..128 letters, digits or '._@-', "
            "starting with a letter or digit"
        )
    return name


@dataclass(frozen=True, slots=True)
class Credentials:
    """The enrolled clients of a federation: name -> hash of its secret."""

    hashes: dict[str, str]

    @classmethod
    def load(cls, path: Path) -> Credentials:
        """Read a credentials file; a malformed one is an error naming it."""
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CredentialsError(f"credentials file {path}: {exc}") from None
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and v.startswith("scrypt$")
            for k, v in data.items()
        ):
            raise CredentialsError(
                f"credentials file {path} must map client names to scrypt hashes "
                "(write it with orchard-server enroll)"
            )
        return cls(dict(data))

    def enrolled(self, name: str) -> bool:
        """Whether ``name`` is enrolled."""
        return name in self.hashes

    def verify_token(self, token: str) -> str | None:
        """The enrolled name a ``NAME:SECRET`` token proves, else None."""
        name, sep, secret = token.partition(":")
        stored = self.hashes.get(name)
        if not sep or stored is None:
            # Spend the same work as a real check, so timing does not tell names apart.
            verify_secret(secret, _DUMMY)
            return None
        return name if verify_secret(secret, stored) else None


_DUMMY = hash_secret("no such client")


def enroll(path: Path, name: str) -> str:
    """Enroll (or re-key) ``name`` in the credentials file at ``path``; returns the
    new secret, which is stored only as its hash: show it once, to its owner."""
    check_name(name)
    hashes = Credentials.load(path).hashes if path.exists() else {}
    secret = secrets.token_urlsafe(32)
    hashes[name] = hash_secret(secret)
    atomic_write_json(path, dict(sorted(hashes.items())))
    path.chmod(0o600)
    return secret
