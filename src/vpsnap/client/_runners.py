"""Where the SDK's plans meet the network: a sync and an async runner perform their effects,
and ``api_method`` turns one plan-returning method into a sync or an async method depending on
the object it is read from (``Client`` objects are bound to ``Sync``, ``AsyncClient`` objects
to ``Async``), with full types for both. ``api_pager`` does the same for list methods, which
return lazy iterators over pages (``SyncPager`` / ``AsyncPager``)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Concatenate, Generic, ParamSpec, Self, TypeVar, overload

import httpx

from vpsnap.client._http import RetryPolicy
from vpsnap.client._plan import ApiRequest, Effect, Notify, Plan, Send, Sleep

T = TypeVar("T")
S = TypeVar("S")
P = ParamSpec("P")


class Sync:
    """Mode of objects from ``Client``: their methods return results."""


class Async:
    """Mode of objects from ``AsyncClient``: their methods return awaitables."""


M = TypeVar("M", Sync, Async)


class Runner(Generic[M]):
    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy


def build_request(http: httpx.Client | httpx.AsyncClient, request: ApiRequest) -> httpx.Request:
    timeout = http.timeout
    if request.extra_read_seconds and timeout.read is not None:  # None: no read limit at all
        timeout = httpx.Timeout(
            connect=timeout.connect,
            read=timeout.read + request.extra_read_seconds,
            write=timeout.write,
            pool=timeout.pool,
        )
    return http.build_request(
        request.method,
        request.path,
        params=list(request.params),
        headers=list(request.headers),
        content=request.body,
        timeout=timeout,
    )


class _Stepper:
    """Advances a plan: sends it the last result, or throws the last error into it."""

    def __init__(self, plan: Plan[Any]) -> None:
        self.plan = plan
        self.value: Any = None
        self.error: BaseException | None = None
        self.result: Any = None

    def next_effect(self) -> Effect | None:
        value, error = self.value, self.error
        self.value, self.error = None, None
        try:
            return self.plan.throw(error) if error is not None else self.plan.send(value)
        except StopIteration as stop:
            self.result = stop.value
            return None


class SyncRunner(Runner[Sync]):
    def __init__(
        self,
        http: httpx.Client,
        policy: RetryPolicy,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(policy)
        self._http = http
        self._sleep = sleep

    def run(self, plan: Plan[T]) -> T:
        stepper = _Stepper(plan)
        try:
            while (effect := stepper.next_effect()) is not None:
                if isinstance(effect, Send):
                    try:
                        stepper.value = self._http.send(build_request(self._http, effect.request))
                    except httpx.TransportError as exc:
                        stepper.error = exc
                elif isinstance(effect, Sleep):
                    self._sleep(effect.seconds)
                else:
                    stepper.value = effect.callback(effect.value)
        finally:
            plan.close()
        result: T = stepper.result
        return result


class AsyncRunner(Runner[Async]):
    def __init__(self, http: httpx.AsyncClient, policy: RetryPolicy) -> None:
        super().__init__(policy)
        self._http = http

    async def run(self, plan: Plan[T]) -> T:
        stepper = _Stepper(plan)
        try:
            while (effect := stepper.next_effect()) is not None:
                if isinstance(effect, Send):
                    request = build_request(self._http, effect.request)
                    try:
                        stepper.value = await self._http.send(request)
                    except httpx.TransportError as exc:
                        stepper.error = exc
                elif isinstance(effect, Sleep):
                    await asyncio.sleep(effect.seconds)
                else:
                    stepper.value = await _notify(effect)
        finally:
            plan.close()
        result: T = stepper.result
        return result


async def _notify(effect: Notify) -> object:
    """The callback's answer (awaited when it is an awaitable), sent back into the plan."""
    outcome = effect.callback(effect.value)
    if inspect.isawaitable(outcome):
        return await outcome
    return outcome


class Bound(Generic[M]):
    """An object whose ``api_method``s run through its runner."""

    _runner: Runner[M]


class api_method(Generic[S, P, T]):  # noqa: N801 - used like a decorator, named like one
    """Declare an API method once, as a plan: read from an object of mode ``Sync`` it is a
    plain method returning ``T``; of mode ``Async``, a method returning ``Awaitable[T]``."""

    def __init__(self, plan: Callable[Concatenate[S, P], Plan[T]]) -> None:
        self._plan = plan
        self._name = plan.__name__.lstrip("_")
        self.__doc__ = plan.__doc__
        # What help() and IDEs show: the plan's parameters without `self`, and no `Plan[…]`.
        signature = inspect.signature(plan)
        self._signature = signature.replace(
            parameters=list(signature.parameters.values())[1:],
            return_annotation=inspect.Signature.empty,
        )

    def __set_name__(self, owner: type[Any], name: str) -> None:
        self._name = name

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> Self: ...
    @overload
    def __get__(self, obj: Bound[Sync], owner: type[Any]) -> Callable[P, T]: ...
    @overload
    def __get__(self, obj: Bound[Async], owner: type[Any]) -> Callable[P, Awaitable[T]]: ...
    def __get__(self, obj: Any, owner: type[Any]) -> Any:
        if obj is None:
            return self
        plan, run = self._plan, obj._runner.run

        def method(*args: Any, **kwargs: Any) -> Any:
            return run(plan(obj, *args, **kwargs))

        method.__name__ = self._name
        method.__qualname__ = f"{type(obj).__name__}.{self._name}"
        method.__doc__ = plan.__doc__
        method.__module__ = plan.__module__
        method.__dict__["__signature__"] = self._signature
        return method


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list: its items, and the cursor of the next page (None: the last)."""

    items: tuple[T, ...]
    next_cursor: str | None

    @property
    def has_more(self) -> bool:
        return self.next_cursor is not None


PageFetch = Callable[[str | None, int], Plan[Page[T]]]
"""Fetch one page: (cursor, limit) → the page."""

MAX_PAGE_SIZE = 100  # the API's cap on `limit`


@dataclass(frozen=True, slots=True)
class PageQuery(Generic[T]):
    fetch: PageFetch[T]
    limit: int
    cursor: str | None


def page_query(fetch: PageFetch[T], limit: int, cursor: str | None) -> PageQuery[T]:
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValueError(f"limit is the page size: 1 to {MAX_PAGE_SIZE}, not {limit}")
    return PageQuery(fetch, limit, cursor)


class SyncPager(Generic[T]):
    """A list, read lazily: iterating yields every item, fetching the next page (``limit``
    items, one request) only when the items of the last one are used up. ``page()`` fetches
    one page, ``pages()`` iterates page by page (``next_cursor`` to resume later)."""

    def __init__(self, runner: Runner[Sync], query: PageQuery[T]) -> None:
        self._run: Callable[[Plan[Page[T]]], Page[T]] = runner.run  # type: ignore[attr-defined]
        self._query = query

    def page(self, cursor: str | None = None, limit: int | None = None) -> Page[T]:
        """One page from ``cursor`` (default: the list's start), of ``limit`` items at most."""
        return self._run(
            self._query.fetch(cursor or self._query.cursor, limit or self._query.limit)
        )

    def pages(self) -> Iterator[Page[T]]:
        cursor = self._query.cursor
        while True:
            page = self._run(self._query.fetch(cursor, self._query.limit))
            yield page
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def __iter__(self) -> Iterator[T]:
        for page in self.pages():
            yield from page.items


class AsyncPager(Generic[T]):
    """``SyncPager`` for ``AsyncClient``: ``async for item in …``, ``await page()``,
    ``async for page in pages()``."""

    def __init__(self, runner: Runner[Async], query: PageQuery[T]) -> None:
        self._run: Callable[[Plan[Page[T]]], Awaitable[Page[T]]] = runner.run  # type: ignore[attr-defined]
        self._query = query

    async def page(self, cursor: str | None = None, limit: int | None = None) -> Page[T]:
        """One page from ``cursor`` (default: the list's start), of ``limit`` items at most."""
        return await self._run(
            self._query.fetch(cursor or self._query.cursor, limit or self._query.limit)
        )

    async def pages(self) -> AsyncIterator[Page[T]]:
        cursor = self._query.cursor
        while True:
            page = await self._run(self._query.fetch(cursor, self._query.limit))
            yield page
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def __aiter__(self) -> AsyncIterator[T]:
        async for page in self.pages():
            for item in page.items:
                yield item


class api_pager(Generic[S, P, T]):  # noqa: N801 - used like a decorator, named like one
    """Declare a list method once, as a function returning a ``PageQuery``: read from a
    ``Sync`` object it returns a ``SyncPager[T]``, from an ``Async`` one an ``AsyncPager[T]``.
    Nothing is sent until the pager is iterated."""

    def __init__(self, query: Callable[Concatenate[S, P], PageQuery[T]]) -> None:
        self._query = query
        self.__doc__ = query.__doc__
        signature = inspect.signature(query)
        self._signature = signature.replace(
            parameters=list(signature.parameters.values())[1:],
            return_annotation=inspect.Signature.empty,
        )
        self._name = query.__name__.lstrip("_")

    def __set_name__(self, owner: type[Any], name: str) -> None:
        self._name = name

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> Self: ...
    @overload
    def __get__(self, obj: Bound[Sync], owner: type[Any]) -> Callable[P, SyncPager[T]]: ...
    @overload
    def __get__(self, obj: Bound[Async], owner: type[Any]) -> Callable[P, AsyncPager[T]]: ...
    def __get__(self, obj: Any, owner: type[Any]) -> Any:
        if obj is None:
            return self
        query, runner = self._query, obj._runner

        def method(*args: Any, **kwargs: Any) -> Any:
            built = query(obj, *args, **kwargs)
            if isinstance(runner, AsyncRunner):
                return AsyncPager(runner, built)
            return SyncPager(runner, built)

        method.__name__ = self._name
        method.__qualname__ = f"{type(obj).__name__}.{self._name}"
        method.__doc__ = query.__doc__
        method.__module__ = query.__module__
        method.__dict__["__signature__"] = self._signature
        return method
