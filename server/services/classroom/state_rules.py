"""What a session's view state and a submission's display name may be (plain, bounded text)."""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

from server.errors import ApiError

# The page's URL query keys: model, image, weights, view, layer, channel, step positions, sandbox settings…
_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
MAX_KEYS = 64
# Keys that belong to one browser, never to the class: which session it is in, whether it follows.
PRIVATE_KEYS = frozenset({"session"})


def validate_state(state: Any, max_bytes: int) -> dict[str, str]:
    """The state as a plain str → str dict, or ApiError 413/422 saying what is wrong."""
    if not isinstance(state, dict):
        raise ApiError(422, "invalid_state", "state must be a JSON object of URL query keys to string values.")
    if len(state) > MAX_KEYS:
        raise ApiError(413, "state_too_large", f"state has {len(state)} keys; at most {MAX_KEYS} are allowed.")
    clean: dict[str, str] = {}
    for key, value in state.items():
        if not isinstance(key, str) or not _KEY.match(key):
            raise ApiError(422, "invalid_state_key",
                           "state keys are URL query names: a letter, then letters, digits, '_', '.' or '-' "
                           "(at most 64).")
        if not isinstance(value, str):
            raise ApiError(422, "invalid_state_value", f"state[{key!r}] must be a string, as in a URL query.")
        if any(unicodedata.category(ch) == "Cc" for ch in value):
            raise ApiError(422, "invalid_state_value", f"state[{key!r}] contains control characters.")
        if key not in PRIVATE_KEYS:
            clean[key] = value
    size = len(encode_state(clean).encode())
    if size > max_bytes:
        raise ApiError(413, "state_too_large", f"The state is {size:,} bytes as JSON; the limit is {max_bytes:,}.")
    return clean


def encode_state(state: dict[str, str]) -> str:
    return json.dumps(state, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def clean_name(name: Any, max_chars: int) -> str:
    """A display name as plain text: control and format characters dropped, whitespace collapsed, length
    limited. The page shows it with textContent, never as HTML."""
    if name is None:
        return ""
    if not isinstance(name, str):
        raise ApiError(422, "invalid_name", "name must be a string.")
    kept = "".join(" " if ch.isspace() else ch for ch in name
                   if unicodedata.category(ch) not in ("Cc", "Cf", "Co", "Cs") or ch.isspace())
    kept = " ".join(kept.split())
    if len(kept) > max_chars:
        raise ApiError(422, "name_too_long", f"Names are at most {max_chars} characters.")
    return kept
