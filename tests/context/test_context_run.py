from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime

import pytest

from outlay._errors import InvalidInput
from outlay.context import CostContext, Run, add_run_listener, attribute, current, remove_run_listener, run
from outlay.context._context import MAX_RUN_PATH


def test_run_outside_attribution_is_a_root_with_default_environment() -> None:
    with run("orchestrator") as r:
        assert isinstance(r, Run)
        assert r.name == "orchestrator"
        assert r.kind == "agent"
        assert r.parent_id is None
        assert r.root_id == r.id
        assert uuid.UUID(r.id).version == 7
        assert r.started_at.tzinfo is UTC
        ctx = current()
        assert ctx is not None
        assert ctx.run is r
        assert (ctx.run_id, ctx.root_run_id, ctx.parent_run_id) == (r.id, r.id, None)
        assert (ctx.run_name, ctx.run_kind) == ("orchestrator", "agent")
        assert ctx.environment == "production"
        assert ctx.tenant is None
    assert current() is None
    assert r.ended_at is not None
    assert r.ended_at >= r.started_at


def test_run_tree_over_three_levels_keeps_attribution() -> None:
    with attribute(tenant="acme", team="x"), run("orchestrator") as root:
        with run("researcher", kind="agent") as child:
            with run("web_search", kind="tool") as leaf:
                ctx = current()
                assert ctx is not None
                assert ctx.tenant == "acme"
                assert dict(ctx.labels) == {"team": "x"}
                assert (ctx.run_id, ctx.parent_run_id, ctx.root_run_id) == (leaf.id, child.id, root.id)
            assert (child.parent_id, child.root_id) == (root.id, root.id)
            assert (leaf.parent_id, leaf.root_id) == (child.id, root.id)
            assert current().run is child  # type: ignore[union-attr]
        with run("writer", kind="llm") as sibling:
            assert (sibling.parent_id, sibling.root_id) == (root.id, root.id)
        assert current().run is root  # type: ignore[union-attr]
    ids = {root.id, child.id, leaf.id, sibling.id}
    assert len(ids) == 4
    assert sorted([root.id, child.id, leaf.id]) == [root.id, child.id, leaf.id]  # UUIDv7: time-ordered


def test_attribute_inside_a_run_keeps_the_run() -> None:
    with run("job", kind="job") as r, attribute(tenant="t2") as ctx:
        assert ctx.run is r
        assert ctx.run_id == r.id


def test_exception_in_run_restores_context_and_ends_run() -> None:
    with run("outer") as outer:
        with pytest.raises(KeyError), run("inner") as inner:
            raise KeyError("x")
        assert current().run is outer  # type: ignore[union-attr]
        assert inner.ended_at is not None
    assert current() is None


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": "x", "kind": "robot"}, "kind"),
        ({"name": ""}, "name"),
        ({"name": None}, "name"),
        ({"name": "x", "requires": ""}, "requires"),
    ],
)
def test_invalid_run_arguments_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        run(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_budget_and_requires_are_kept_on_the_run() -> None:
    budget = object()
    with run("x", budget=budget, requires="pro") as r:
        assert r.budget is budget
        assert r.requires == "pro"


def test_sync_decorator_opens_a_new_run_per_call() -> None:
    seen: list[CostContext] = []

    @run("step", kind="tool")
    def step() -> None:
        ctx = current()
        assert ctx is not None
        seen.append(ctx)

    with run("parent") as parent:
        step()
        step()
    step()
    assert seen[0].run_id != seen[1].run_id
    assert seen[0].parent_run_id == seen[1].parent_run_id == parent.id
    assert seen[2].parent_run_id is None
    assert seen[2].root_run_id == seen[2].run_id


async def test_async_decorator_opens_the_run_inside_each_call() -> None:
    @run("fetch", kind="retrieval")
    async def fetch() -> CostContext:
        await asyncio.sleep(0)
        ctx = current()
        assert ctx is not None
        return ctx

    coro = fetch()  # created outside any run: nothing is opened until it runs
    assert current() is None
    with run("agent") as parent:
        a, b = await asyncio.gather(coro, fetch())
    assert a.run_kind == b.run_kind == "retrieval"
    assert a.run_id != b.run_id
    assert a.parent_run_id == b.parent_run_id == parent.id


async def test_async_with_works() -> None:
    async with run("a") as r:
        assert current().run is r  # type: ignore[union-attr]
    assert current() is None


class Refused(Exception):
    """Stands for the budgets package refusing a run (NotEntitled, BudgetExceeded)."""


class Recorder:
    def __init__(self, refuse: BaseException | None = None, fail_end: BaseException | None = None) -> None:
        self.events: list[tuple[str, str, object]] = []
        self.refuse = refuse
        self.fail_end = fail_end

    def on_run_start(self, run: Run, ctx: CostContext) -> None:
        assert ctx.run is run
        if self.refuse is not None and run.requires == "enterprise":
            raise self.refuse
        self.events.append(("start", run.name, ctx.tenant))

    def on_run_end(self, run: Run, ctx: CostContext, exc: BaseException | None) -> None:
        self.events.append(("end", run.name, exc))
        if self.fail_end is not None:
            raise self.fail_end


@pytest.fixture
def recorder() -> object:
    rec = Recorder(refuse=Refused("tier free may not run this"))
    add_run_listener(rec)
    add_run_listener(rec)  # idempotent
    yield rec
    remove_run_listener(rec)


def test_listener_sees_start_and_end_with_the_exception(recorder: Recorder) -> None:
    with attribute(tenant="acme"), run("a"), pytest.raises(ValueError, match="bad"), run("b"):
        raise ValueError("bad")
    assert [e[:2] for e in recorder.events] == [("start", "a"), ("start", "b"), ("end", "b"), ("end", "a")]
    assert recorder.events[0][2] == "acme"
    assert isinstance(recorder.events[2][2], ValueError)
    assert recorder.events[3][2] is None


def test_listener_can_refuse_a_run_and_the_body_never_runs(recorder: Recorder) -> None:
    ran = False
    with run("outer") as outer:
        with pytest.raises(Refused), run("premium", requires="enterprise"):
            ran = True
        assert current().run is outer  # type: ignore[union-attr]
    assert not ran
    assert ("start", "premium", None) not in recorder.events


def test_listeners_that_accepted_hear_about_a_refusal() -> None:
    accepting = Recorder()
    refusing = Recorder(refuse=Refused("no"))
    add_run_listener(accepting)
    add_run_listener(refusing)
    try:
        with pytest.raises(Refused), run("premium", requires="enterprise"):
            pass
    finally:
        remove_run_listener(accepting)
        remove_run_listener(refusing)
    assert [e[0] for e in accepting.events] == ["start", "end"]
    assert isinstance(accepting.events[1][2], Refused)
    assert current() is None


def test_listener_error_on_end_surfaces_when_body_succeeded() -> None:
    failing = Recorder(fail_end=RuntimeError("settle failed"))
    add_run_listener(failing)
    try:
        with pytest.raises(RuntimeError, match="settle failed"), run("a"):
            pass
        # ... but never hides the body's own exception.
        with pytest.raises(KeyError), run("b"):
            raise KeyError("body")
    finally:
        remove_run_listener(failing)
    assert current() is None


def test_removed_listener_is_not_called() -> None:
    rec = Recorder()
    add_run_listener(rec)
    remove_run_listener(rec)
    with run("a"):
        pass
    assert rec.events == []


def test_run_timestamps_are_utc_datetimes() -> None:
    before = datetime.now(UTC)
    with run("a") as r:
        pass
    assert before <= r.started_at <= r.ended_at <= datetime.now(UTC)  # type: ignore[operator]


def test_a_run_carries_its_ancestors_up_to_a_bound() -> None:
    with run("root") as root:
        ctx = current()
        assert ctx is not None and ctx.run_path == ()
        with run("child") as child, run("grandchild"):
            ctx = current()
            assert ctx is not None and ctx.run_path == (root.id, child.id)
    opened = []
    with contextlib.ExitStack() as stack:
        for depth in range(MAX_RUN_PATH + 5):
            opened.append(stack.enter_context(run(f"level-{depth}")).id)
        ctx = current()
        assert ctx is not None
        # the nearest ancestors are kept: each still links to its parent
        assert ctx.run_path == tuple(opened[-MAX_RUN_PATH - 1 : -1])
        assert ctx.root_run_id == opened[0]


def test_a_context_refuses_a_run_path_that_is_not_the_runs_ancestry() -> None:
    with pytest.raises(InvalidInput, match="run_path: must end with the parent_run_id"):
        CostContext(run_id="c", parent_run_id="b", run_path=("a",))
    with pytest.raises(InvalidInput, match="run_path: must end with the parent_run_id"):
        CostContext(run_path=("a",))
    with pytest.raises(InvalidInput, match="run_path: must not repeat"):
        CostContext(run_id="b", parent_run_id="b", run_path=("b",))
    with pytest.raises(InvalidInput, match="run_path: holds at most"):
        ids = tuple(f"r{i}" for i in range(MAX_RUN_PATH + 1))
        CostContext(run_id="x", parent_run_id=ids[-1], run_path=ids)
    with pytest.raises(InvalidInput, match="run_path: must be a sequence"):
        CostContext(run_id="x", parent_run_id="a", run_path="a")  # type: ignore[arg-type]
