"""The context follows asyncio tasks by itself, and threads only through ``wrap``."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import pytest

from outlay._errors import InvalidInput
from outlay.context import CostContext, attribute, current, run, wrap


async def test_gathered_and_created_tasks_keep_the_parent_run() -> None:
    async def child() -> CostContext | None:
        await asyncio.sleep(0)
        return current()

    with attribute(tenant="acme"), run("orchestrator") as parent:
        gathered = await asyncio.gather(child(), child())
        created = await asyncio.create_task(child())
    for ctx in [*gathered, created]:
        assert ctx is not None
        assert ctx.run is parent
        assert ctx.tenant == "acme"


async def test_a_child_task_run_does_not_leak_into_parent_or_siblings() -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    async def opens_own_run(name: str) -> tuple[str, str | None]:
        with run(name, kind="tool") as mine:
            started.set()
            await release.wait()  # stay open while the parent and the sibling look
            ctx = current()
            assert ctx is not None
            assert ctx.run is mine
            return mine.id, mine.parent_id

    async def sibling() -> CostContext | None:
        await started.wait()
        return current()

    with run("orchestrator") as parent:
        task = asyncio.create_task(opens_own_run("search"))
        sib = asyncio.create_task(sibling())
        await started.wait()
        assert current().run is parent  # type: ignore[union-attr]
        seen_by_sibling = await sib
        release.set()
        child_id, child_parent = await task
        assert current().run is parent  # type: ignore[union-attr]
    assert seen_by_sibling is not None
    assert seen_by_sibling.run is parent
    assert child_parent == parent.id
    assert child_id != parent.id


async def test_many_concurrent_tasks_each_see_their_own_tenant() -> None:
    async def serve(tenant: str) -> list[str | None]:
        seen = []
        with attribute(tenant=tenant), run("handler"):
            for _ in range(5):
                await asyncio.sleep(0)
                ctx = current()
                seen.append(ctx.tenant if ctx else None)
        return seen

    results = await asyncio.gather(*(serve(f"t{i}") for i in range(50)))
    for i, seen in enumerate(results):
        assert seen == [f"t{i}"] * 5


async def test_to_thread_copies_the_context() -> None:
    with attribute(tenant="acme"):
        ctx = await asyncio.to_thread(current)
    assert ctx is not None
    assert ctx.tenant == "acme"


def test_a_plain_thread_does_not_see_the_context() -> None:
    # Documented behaviour: a new thread starts with an empty context; use wrap().
    seen: list[CostContext | None] = []
    with attribute(tenant="acme"):
        thread = threading.Thread(target=lambda: seen.append(current()))
        thread.start()
        thread.join()
    assert seen == [None]


def test_a_pool_thread_without_wrap_does_not_see_the_context() -> None:
    with ThreadPoolExecutor(max_workers=1) as pool, attribute(tenant="acme"):
        assert pool.submit(current).result() is None


def test_wrap_carries_the_context_into_a_thread() -> None:
    seen: list[CostContext | None] = []

    def look() -> None:
        seen.append(current())

    with attribute(tenant="acme"), run("orchestrator") as parent:
        thread = threading.Thread(target=wrap(look))
        thread.start()
        thread.join()
    assert seen[0] is not None
    assert seen[0].tenant == "acme"
    assert seen[0].run is parent


def test_wrap_of_a_generator_function_runs_every_step_in_the_captured_context() -> None:
    def tenants() -> Iterator[str | None]:
        for _ in range(3):
            ctx = current()
            yield ctx.tenant if ctx else None

    with attribute(tenant="acme"):
        wrapped = wrap(tenants)
    with ThreadPoolExecutor(1) as pool:  # consumed in a thread with no context
        assert pool.submit(lambda: list(wrapped())).result() == ["acme"] * 3
    with attribute(tenant="globex"):  # or under another tenant
        assert list(wrapped()) == ["acme"] * 3


def test_wrap_in_a_pool_runs_concurrent_calls_each_in_its_own_copy() -> None:
    barrier = threading.Barrier(4)

    def work(i: int) -> tuple[str | None, str | None, str | None]:
        barrier.wait(timeout=10)  # all four calls of the same wrapped function run at once
        outer = current()
        with run(f"worker-{i}", kind="tool") as mine:
            barrier.wait(timeout=10)
            inner = current()
            assert inner is not None
            assert inner.run is mine
        after = current()
        return (
            outer.tenant if outer else None,
            mine.parent_id,
            after.run_id if after else None,
        )

    with attribute(tenant="acme"), run("fan-out") as parent:
        wrapped = wrap(work)
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(wrapped, range(4)))
        assert current().run is parent  # type: ignore[union-attr]
    assert results == [("acme", parent.id, parent.id)] * 4


def test_wrap_captures_the_context_at_wrap_time() -> None:
    with attribute(tenant="first"):
        wrapped = wrap(current)
    with attribute(tenant="second"):
        ctx = wrapped()
    assert ctx is not None
    assert ctx.tenant == "first"
    assert current() is None


def test_wrap_keeps_the_function_result_and_exceptions() -> None:
    def boom() -> None:
        raise ValueError("from worker")

    with ThreadPoolExecutor(max_workers=1) as pool:
        with pytest.raises(ValueError, match="from worker"):
            pool.submit(wrap(boom)).result()
        assert pool.submit(wrap(lambda: 7)).result() == 7


def test_wrap_of_a_coroutine_function_runs_it_in_the_captured_context() -> None:
    async def probe() -> CostContext | None:
        await asyncio.sleep(0)
        return current()

    with attribute(tenant="acme"):
        wrapped = wrap(probe)
    result: list[CostContext | None] = []
    # A fresh event loop in another thread: its task starts from that thread's empty context.
    thread = threading.Thread(target=lambda: result.append(asyncio.run(wrapped())))
    thread.start()
    thread.join()
    assert result[0] is not None
    assert result[0].tenant == "acme"


async def test_wrap_of_an_async_generator_function_is_refused() -> None:
    # Its body would run in the consumer's context: another tenant's work charged to the consumer.
    async def steps() -> AsyncIterator[CostContext | None]:
        yield current()

    with attribute(tenant="acme"), pytest.raises(InvalidInput) as info:
        wrap(steps)
    assert info.value.field == "fn"


def _tenant_here() -> str | None:
    ctx = current()
    return None if ctx is None else ctx.tenant


def test_a_forked_pool_worker_does_not_keep_the_context_it_was_forked_in() -> None:
    # Workers fork at the first submit, inside acme's request: later jobs are not acme's.
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
        with attribute(tenant="acme"):
            assert pool.submit(_tenant_here).result() is None
        with attribute(tenant="globex"):
            assert pool.submit(_tenant_here).result() is None
        assert pool.submit(_tenant_here).result() is None


class _AsyncTool:
    """A callable object whose __call__ is a coroutine function (an agent tool, say)."""

    async def __call__(self) -> tuple[str | None, str | None]:
        await asyncio.sleep(0)
        ctx = current()
        return (ctx.tenant, ctx.run_name) if ctx is not None else (None, None)


def _returns_a_coroutine() -> object:
    return _AsyncTool()()  # a plain function whose result is a coroutine


async def test_a_run_decorating_an_async_callable_object_encloses_its_body() -> None:
    # The run used to open and close around building the coroutine, before its body ran.
    decorated = run("tool")(_AsyncTool())
    with attribute(tenant="acme"):
        assert await decorated() == ("acme", "tool")


async def test_wrap_carries_the_context_into_async_callables_of_every_kind() -> None:
    with attribute(tenant="acme"):
        tool, plain = wrap(_AsyncTool()), wrap(_returns_a_coroutine)
    with attribute(tenant="globex"):  # awaited in another tenant's task: still acme's work
        assert await tool() == ("acme", None)
        assert await plain() == ("acme", None)  # type: ignore[misc]


class _StreamingTool:
    """A callable object whose __call__ is a generator function (a streaming tool)."""

    def __call__(self) -> Iterator[str | None]:
        for _ in range(2):
            ctx = current()
            yield ctx.run_name if ctx is not None else None


class _AsyncStreamingTool:
    async def __call__(self) -> AsyncIterator[int]:
        yield 1


def test_a_run_decorating_a_generator_callable_object_encloses_every_step() -> None:
    # The run used to open and close around building the generator: the tool's spend, recorded
    # in its body, went to the caller's run.
    with attribute(tenant="acme"), run("caller"):
        assert list(run("tool", kind="tool")(_StreamingTool())()) == ["tool", "tool"]
        tool = wrap(_StreamingTool())
    with run("elsewhere"):
        assert list(tool()) == ["caller", "caller"]  # in the contexts captured at wrap


def test_an_async_generator_callable_object_is_refused_like_an_async_generator_function() -> None:
    with pytest.raises(InvalidInput, match="async generator"):
        run("tool")(_AsyncStreamingTool())
    with pytest.raises(InvalidInput, match="async generator"):
        wrap(_AsyncStreamingTool())
