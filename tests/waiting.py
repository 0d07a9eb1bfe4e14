"""Waiting on a condition, for tests that must not sleep a fixed time."""

from __future__ import annotations

import asyncio


async def wait_until(predicate, timeout: float = 10.0, interval: float = 0.01):
    """Polls an (async or plain) predicate until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)
