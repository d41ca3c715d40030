"""Join codes people can read aloud and type, and teacher tokens that only the teacher's page holds."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

# No 0/O, 1/I/l: a code read off a projector or a phone must not be ambiguous. Codes are upper case; what
# people type is upper-cased first, so "k7xq2m" finds "K7XQ2M".
CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
CODE_LENGTH = 6  # 31**6 ≈ 8.9e8 codes: guessing a live one is hopeless at any request rate we admit
_CODE = re.compile(f"^[{CODE_ALPHABET}]{{{CODE_LENGTH}}}$")
TOKEN_BYTES = 24  # 192 bits


def new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def normalize_code(text: str) -> str | None:
    """The canonical code for what someone typed, or None when it cannot be one."""
    code = text.strip().upper()
    return code if _CODE.match(code) else None


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_digest(token: str) -> str:
    """What is stored: a sha256 of the token, so a leaked session record does not hand out the session."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def token_matches(token: str, digest: str) -> bool:
    return hmac.compare_digest(token_digest(token), digest)
