"""Where the SDK's plans meet the network: a sync and an async runner perform their effects,
and ``api_method`` turns one plan-returning method into a sync or an async method depending on
the object it is read from (``Client`` objects are bound to ``Sync``, ``AsyncClient`` objects
to ``Async``), with full types for both."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
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
                    effect.callback(effect.value)
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
                    await _notify(effect)
        finally:
            plan.close()
        result: T = stepper.result
        return result


async def _notify(effect: Notify) -> None:
    outcome = effect.callback(effect.value)
    if inspect.isawaitable(outcome):
        await outcome


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
