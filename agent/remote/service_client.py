"""What the shadow and jobs components share about AWS's V2 service clients on the agent's one
connection: client options, stream options that hand events to the loop (awscrt calls back on its
own threads, where blocking can deadlock it), awaiting a request, and describing a failure."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import Any

from awscrt import mqtt_request_response
from awscrt.exceptions import AwsCrtError
from awsiot import ServiceStreamOptions, V2ServiceException

from iotmqtt import awaitable


def client_options(timeout_s: int) -> mqtt_request_response.ClientOptions:
    return mqtt_request_response.ClientOptions(
        max_request_response_subscriptions=3, max_streaming_subscriptions=2, operation_timeout_in_seconds=timeout_s
    )


def stream_options(
    loop: asyncio.AbstractEventLoop,
    on_event: Callable[[Any], None],
    on_subscription: Callable[[Any], None],
    on_bad_event: Callable[[Any], None],
) -> ServiceStreamOptions:
    """Each listener runs on ``loop``, never on awscrt's thread."""

    def post(fn: Callable[[Any], None]) -> Callable[[Any], None]:
        def handler(ev: Any) -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(fn, ev)

        return handler

    return ServiceStreamOptions(
        incoming_event_listener=post(on_event),
        subscription_status_listener=post(on_subscription),
        deserialization_failure_listener=post(on_bad_event),
    )


async def call(fut: concurrent.futures.Future[Any], timeout_s: float) -> Any:
    """Await a service request. A cancelled wait never cancels awscrt's future (it completes it
    later), and a cancellation is never lost: with ``asyncio.wait_for`` (Python 3.11) a response
    arriving in the same loop turn as the cancel was returned instead, the shadow or jobs loop went
    back to its queue, and the feature's stop waited for it forever (the likeliest cause of
    the 213 of 1,000 simulated gateways that never finished stopping)."""
    async with asyncio.timeout(timeout_s + 5):
        return await awaitable(fut)


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, V2ServiceException):
        err = exc.modeled_error
        if err is not None:
            return f"{exc.message}: {getattr(err, 'code', '')} {getattr(err, 'message', '')}".strip()
        return f"{exc.message}: {exc.inner_error}"
    if isinstance(exc, AwsCrtError):
        return f"{exc.name}: {exc.message}"
    return type(exc).__name__
