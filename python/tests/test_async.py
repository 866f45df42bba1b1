"""dtc.AsyncClient: the same calls as coroutines, many at once over one connection."""

from __future__ import annotations

import asyncio
import uuid

import pytest

import dtc
from conftest import LIMIT, Local


def test_thousands_of_concurrent_runs_share_one_connection(cluster: Local) -> None:
    async def main() -> list[str]:
        async with await dtc.AsyncClient.connect(cluster.router) as client:
            views = await asyncio.wait_for(
                asyncio.gather(*(client.run("wordcount", " ".join(["x"] * (i % 7 + 1))) for i in range(2000))),
                LIMIT,
            )
            return [v.text or "" for v in views]

    texts = asyncio.run(main())
    assert texts == [str(i % 7 + 1) for i in range(2000)]


def test_submit_get_cancel_and_failures(cluster: Local) -> None:
    async def main() -> None:
        client = await dtc.AsyncClient.connect(cluster.router)
        view = await client.submit("noop", delay=60)
        assert view.state == "scheduled"
        assert (await client.get(view.id)).state == "scheduled"
        assert (await client.cancel(view.id)).state == "cancelled"
        assert (await client.get(view.id, wait=True, timeout=LIMIT)).state == "cancelled"
        with pytest.raises(dtc.TaskCancelled):
            await client.run("noop", id=view.id, timeout=LIMIT)
        with pytest.raises(dtc.TaskFailed) as failed:
            await client.run("fail", "fatal: async failure", timeout=LIMIT)
        assert failed.value.error == "async failure"
        with pytest.raises(dtc.NotFound):
            await client.get(str(uuid.uuid4()))
        with pytest.raises(dtc.Timeout):
            await client.run("sleep", "1000000", timeout=0.05)
        ran = await client.submit("sleep", "1000")
        assert (await client.get(ran.id, wait=True, timeout=LIMIT)).ok
        await client.close()
        with pytest.raises(dtc.Unavailable):
            await client.run("noop")

    asyncio.run(main())


def test_a_client_belongs_to_its_event_loop(cluster: Local) -> None:
    async def connect() -> dtc.AsyncClient:
        return await dtc.AsyncClient.connect(cluster.router)

    client = asyncio.run(connect())

    async def elsewhere() -> None:
        with pytest.raises(RuntimeError, match="event loop"):
            await client.run("noop")

    asyncio.run(elsewhere())
