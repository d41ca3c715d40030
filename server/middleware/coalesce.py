"""Identical GETs in flight at the same time get one answer.

A class following the teacher asks for the same URLs at the same moment (every laptop opens the same
image's view). :class:`~server.services.runtime.cache.ResultCache` already makes them share one *computation*;
this middleware makes them share the whole *request*: the first one (the leader) runs through routing,
dependencies, the worker thread and serialisation, and the others (followers) wait on the event loop and
are sent a copy of its answer. A follower costs about what a static file costs.

What is shared, and when:

- only ``GET`` (``HEAD`` arrives here as a GET, see :class:`~server.middleware.security.HeadMiddleware`) under the
  prefixes given: view data whose URL carries its whole state (model, weights, image hash, layer…), so
  identical URLs give identical bytes whoever asks. Class sessions (per-client answers) and event
  streams are not under them.
- the key is the path and query string exactly, and the request headers that could change an answer
  (:data:`VARYING_HEADERS`).
- only a complete ``200`` answer of at most ``max_body`` bytes sent in one body message is copied. Any
  other answer (an error, a refusal meant for the leader's client, a streamed or large body) releases the
  followers at once and each runs the request itself, as it would have without this middleware.
- a flight ends when its answer is complete: a request that comes after that runs (and finds the result
  cache) as usual. Nothing is kept.
- cancellation: the leader's work stops when *every* client of the flight has gone, not when the
  leader's alone has (the leader's app hears ``http.disconnect`` only then).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Request headers an answer could depend on: CORS echoes Origin; range requests; credentials (none of these
# views reads them, but a proxy in front might). Accept, User-Agent & co. change nothing here, and
# If-None-Match is answered outside this middleware (server.middleware.not_modified), from the shared 200.
VARYING_HEADERS = frozenset({b"origin", b"if-range", b"range", b"cookie", b"authorization"})

DISCONNECT: Message = {"type": "http.disconnect"}


class _Flight:
    __slots__ = ("answer", "done", "leader_gone", "listening", "all_gone")

    def __init__(self) -> None:
        self.answer: list[Message] | None = None  # the leader's messages, when they may be copied
        self.done = asyncio.Event()  # the answer is known (or known not to be shareable)
        self.leader_gone = False
        self.listening = 0  # followers whose clients are still there
        self.all_gone = asyncio.Event()  # the leader's client and every follower's have gone

    def check_gone(self) -> None:
        if self.leader_gone and self.listening == 0:
            self.all_gone.set()


def _copy(message: Message) -> Message:
    return {**message, "headers": list(message["headers"])} if "headers" in message else message


@dataclass
class SharedAnswerStats:
    led: int = 0  # requests that ran with followers able to join
    copied: int = 0  # followers sent a copy of the leader's answer
    ran_alone: int = 0  # followers whose leader's answer could not be shared: they ran the request themselves


class SharedAnswers:
    """The flights in progress (identical GETs in flight now) and their counts; made by the app, read by
    tests and benchmarks, used by :class:`CoalesceIdenticalGets`."""

    def __init__(self, max_body: int = 8 << 20) -> None:
        self.max_body = max_body
        self.flights: dict[tuple, _Flight] = {}
        self.waiting = 0  # followers waiting now
        self.stats = SharedAnswerStats()


class CoalesceIdenticalGets:
    """ASGI middleware; see the module's docstring."""

    def __init__(self, app: ASGIApp, answers: SharedAnswers, prefixes: Iterable[str]) -> None:
        self.app = app
        self.answers = answers
        self.prefixes = tuple(prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or not scope["path"].startswith(self.prefixes):
            await self.app(scope, receive, send)
            return
        key = (scope["path"], scope["query_string"],
               tuple(sorted((n, v) for n, v in scope.get("headers") or () if n in VARYING_HEADERS)))
        flight = self.answers.flights.get(key)
        if flight is None or flight.all_gone.is_set():  # (a flight everyone left is being cancelled)
            await self._lead(key, scope, receive, send)
        else:
            await self._follow(flight, scope, receive, send)

    async def _lead(self, key: tuple, scope: Scope, receive: Receive, send: Send) -> None:
        answers = self.answers
        flight = answers.flights[key] = _Flight()
        answers.stats.led += 1
        messages: list[Message] = []
        size = 0

        def settle(answer: list[Message] | None) -> None:
            if answers.flights.get(key) is flight:
                del answers.flights[key]
            if not flight.done.is_set():
                flight.answer = answer
                flight.done.set()

        async def capture(message: Message) -> None:
            nonlocal size
            if not flight.done.is_set():
                kind = message["type"]
                if kind == "http.response.start":
                    if message["status"] == 200:
                        messages.append(_copy(message))
                    else:
                        settle(None)
                elif kind == "http.response.body":
                    size += len(message.get("body", b""))
                    if message.get("more_body", False) or size > answers.max_body or not messages:
                        settle(None)
                    else:
                        messages.append(message)
                        settle(messages)
                else:
                    settle(None)
            await send(message)

        async def leader_receive() -> Message:
            message = await receive()
            if message["type"] == "http.disconnect":
                flight.leader_gone = True
                flight.check_gone()
                await flight.all_gone.wait()  # others still want the answer: the work goes on
            return message

        try:
            await self.app(scope, leader_receive, capture)
        finally:
            settle(None)  # the app ended without a complete answer: the followers run it themselves

    async def _follow(self, flight: _Flight, scope: Scope, receive: Receive, send: Send) -> None:
        first = await receive()  # a GET's one http.request (or, from a client gone already, a disconnect)
        if first["type"] == "http.disconnect":
            return
        answers = self.answers
        gone = asyncio.Event()

        async def watch() -> None:  # this client's disconnect (nothing else can come for a GET)
            try:
                while (await receive())["type"] != "http.disconnect":
                    pass
            except Exception:  # the server is closing the connection
                pass
            gone.set()
            flight.listening -= 1
            flight.check_gone()

        flight.listening += 1
        answers.waiting += 1
        watcher = asyncio.ensure_future(watch())
        try:
            await flight.done.wait()
        finally:
            answers.waiting -= 1
            watcher.cancel()
            if not gone.is_set():
                flight.listening -= 1
                flight.check_gone()
        if gone.is_set():
            return
        if flight.answer is not None:
            answers.stats.copied += 1
            for message in flight.answer:
                await send(_copy(message))  # outer middlewares may change a message's headers in place
            return
        answers.stats.ran_alone += 1
        delivered = False

        async def again() -> Message:  # the request runs itself: its one message, then only a disconnect
            nonlocal delivered
            if not delivered:
                delivered = True
                return first
            while (await receive())["type"] != "http.disconnect":
                pass
            return DISCONNECT

        await self.app(scope, again, send)
