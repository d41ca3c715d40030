"""A failed weights download told as a sentence for a person, not as ``<urlopen error [Errno -3] …>``.

The registry wraps whatever ``urllib`` raised in a :class:`WeightsError`; this looks at the cause and says
what happened (offline, refused, timed out, an HTTP status) and what to do about it.
"""

from __future__ import annotations

import socket
import urllib.error
from urllib.parse import urlparse

from models.registry import HubWeights, WeightsError


def _root_cause(exc: BaseException) -> BaseException:
    seen = set()
    while exc.__cause__ is not None and id(exc) not in seen:
        seen.add(id(exc))
        exc = exc.__cause__
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError) and isinstance(exc.reason, BaseException):
        return exc.reason
    return exc


def describe_failure(exc: WeightsError, source: HubWeights, model_id: str) -> str:
    """One or two sentences: what went wrong and what the user can do."""
    cause = _root_cause(exc)
    host = urlparse(source.url).hostname or "the download server"
    name = source.filename
    remedy = (f" Connect to the internet and press Retry, or copy {name} into {source.cached_path.parent}; "
              f"until then {model_id} runs with untrained (random) weights.")
    if cause is exc:  # the registry's own sentence (a failed hash check, an unreadable file)
        text = str(exc)
        return text if text.endswith(".") else f"{text}."
    if isinstance(cause, socket.gaierror):
        return f"ConvScope could not download {name}: this computer seems to be offline ({host} could not be looked up)." + remedy
    if isinstance(cause, ConnectionRefusedError):
        return f"ConvScope could not download {name}: {host} refused the connection." + remedy
    if isinstance(cause, (TimeoutError, socket.timeout)):
        return f"ConvScope could not download {name}: {host} did not answer in time." + remedy
    if isinstance(cause, urllib.error.HTTPError):
        return f"ConvScope could not download {name}: {host} answered HTTP {cause.code} ({cause.reason})." + remedy
    if isinstance(cause, OSError):
        return f"ConvScope could not download {name}: the connection to {host} failed ({cause.strerror or type(cause).__name__})." + remedy
    return f"ConvScope could not download {name} ({type(cause).__name__})." + remedy
