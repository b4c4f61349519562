from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterator

import pytest

from outlay._errors import ConfigError, InvalidInput
from outlay.context import CostContext, attribute, current, run, set_default_environment


def test_current_is_none_outside_any_context() -> None:
    assert current() is None


def test_attribute_sets_every_field_and_labels() -> None:
    with attribute(
        tenant="acme",
        workspace="ws-1",
        user="u-7",
        feature="search",
        billing_unit="workspace",
        environment="staging",
        request_id="req-1",
        workflow_id="wf-9",
        team="growth",
    ) as ctx:
        assert current() is ctx
        assert (ctx.tenant, ctx.workspace, ctx.user, ctx.feature) == ("acme", "ws-1", "u-7", "search")
        assert (ctx.billing_unit, ctx.environment) == ("workspace", "staging")
        assert (ctx.request_id, ctx.workflow_id) == ("req-1", "wf-9")
        assert dict(ctx.labels) == {"team": "growth"}
        assert ctx.run is None
        assert ctx.run_id is None
    assert current() is None


def test_nested_attribute_overrides_field_by_field_and_merges_labels() -> None:
    with attribute(tenant="acme", user="alice", team="a", region="eu"):
        with attribute(user="bob", team="b", labels={"cost.center": "42"}) as inner:
            assert inner.tenant == "acme"
            assert inner.user == "bob"
            assert dict(inner.labels) == {"team": "b", "region": "eu", "cost.center": "42"}
        outer = current()
        assert outer is not None
        assert outer.user == "alice"
        assert dict(outer.labels) == {"team": "a", "region": "eu"}


def test_context_is_immutable_and_labels_read_only() -> None:
    with attribute(tenant="acme", team="a") as ctx:
        with pytest.raises(dataclasses.FrozenInstanceError):
            ctx.tenant = "evil"  # type: ignore[misc]
        with pytest.raises(TypeError):
            ctx.labels["team"] = "b"  # type: ignore[index]


def test_labels_given_as_mutable_dict_are_copied() -> None:
    labels = {"team": "a"}
    with attribute(labels=labels) as ctx:
        labels["team"] = "changed"
        assert ctx.labels["team"] == "a"


def test_exception_inside_with_restores_previous_context() -> None:
    with attribute(tenant="outer") as outer:
        with pytest.raises(RuntimeError, match="boom"), attribute(tenant="inner"):
            raise RuntimeError("boom")
        assert current() is outer
    assert current() is None


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"environment": "prod"}, "environment"),
        ({"billing_unit": "team"}, "billing_unit"),
        ({"tenant": ""}, "tenant"),
        ({"user": 42}, "user"),
        ({"feature": "x" * 201}, "feature"),
        ({"tenant": "acme\nevil"}, "tenant"),  # no cost event could hold it: refused here, not later
        ({"labels": {"k": 1}}, "labels"),
        ({"labels": {"": "v"}}, "labels"),
        ({"labels": ["not", "a", "mapping"]}, "labels"),
        ({"team": 3}, "labels"),
        # No UTF-8 form (os.fsdecode of a non-UTF-8 name): no cost event could be encoded with it.
        ({"labels": {"file": "report-\udcff.pdf"}}, "labels"),
        ({"labels": {"\ud800": "v"}}, "labels"),
    ],
)
def test_bad_input_names_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        attribute(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field
    assert field in str(info.value)
    assert current() is None


def test_cost_context_constructor_validates() -> None:
    with pytest.raises(InvalidInput, match="environment"):
        CostContext(environment="qa")
    with pytest.raises(InvalidInput, match="run_kind"):
        CostContext(run_kind="robot")
    ctx = CostContext(tenant="a", labels={"k": "v"})
    assert ctx == CostContext(tenant="a", labels={"k": "v"})
    assert hash(ctx) == hash(CostContext(tenant="a", labels={"k": "v"}))


def test_default_environment_is_production() -> None:
    with attribute(tenant="a") as ctx:
        assert ctx.environment == "production"


def test_default_environment_from_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTLAY_ENVIRONMENT", "development")
    with attribute(tenant="a") as ctx:
        assert ctx.environment == "development"


def test_bad_env_var_is_a_config_error_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTLAY_ENVIRONMENT", "prd")
    with pytest.raises(ConfigError, match="OUTLAY_ENVIRONMENT"), attribute(tenant="a"):
        pass


def test_set_default_environment_wins_over_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTLAY_ENVIRONMENT", "development")
    set_default_environment("test")
    with attribute(tenant="a") as ctx:
        assert ctx.environment == "test"
    with pytest.raises(InvalidInput, match="environment"):
        set_default_environment("nope")


def test_explicit_environment_wins_over_default() -> None:
    set_default_environment("test")
    with attribute(environment="staging") as ctx, attribute(user="u") as inner:
        assert ctx.environment == inner.environment == "staging"


def test_decorator_on_sync_function() -> None:
    @attribute(tenant="acme", feature="chat")
    def handler(x: int) -> tuple[int, str | None]:
        ctx = current()
        assert ctx is not None
        return x * 2, ctx.feature

    assert handler(21) == (42, "chat")
    assert handler.__name__ == "handler"
    assert current() is None


async def test_decorator_on_async_function_applies_per_call() -> None:
    @attribute(tenant="acme")
    async def handler(user: str) -> str | None:
        with attribute(user=user):
            await asyncio.sleep(0)
            ctx = current()
            assert ctx is not None
            return ctx.user

    assert list(await asyncio.gather(handler("a"), handler("b"))) == ["a", "b"]
    assert current() is None


def test_decorating_an_async_generator_is_refused() -> None:
    with pytest.raises(InvalidInput, match="async generator"):

        @attribute(tenant="a")
        async def gen() -> object:
            yield 1


def test_a_decorated_generator_keeps_its_context_to_itself_between_yields() -> None:
    @run("producer")
    @attribute(tenant="globex")
    def produce() -> Iterator[tuple[str | None, str | None]]:
        for _ in range(2):
            ctx = current()
            assert ctx is not None
            received = yield ctx.tenant, ctx.run_name
            assert received in (None, "ack")

    with attribute(tenant="acme"):
        items = produce()
        first = next(items)
        assert first == ("globex", "producer")
        ctx = current()
        assert ctx is not None and (ctx.tenant, ctx.run_name) == ("acme", None)  # not globex's
        assert items.send("ack") == ("globex", "producer")
        with pytest.raises(StopIteration):
            next(items)
        assert current() is ctx
        late = produce()
        next(late)
    with attribute(tenant="initech"):
        late.close()  # closed (or collected) elsewhere: that context is not touched
        ctx = current()
        assert ctx is not None and ctx.tenant == "initech"
    assert current() is None


def test_an_exception_thrown_into_a_decorated_generator_reaches_it() -> None:
    @attribute(tenant="a")
    def guarded() -> Iterator[str]:
        try:
            yield "working"
        except KeyError:
            ctx = current()
            assert ctx is not None
            yield f"handled in {ctx.tenant}"

    items = guarded()
    assert next(items) == "working"
    assert items.throw(KeyError("x")) == "handled in a"
    assert current() is None


def test_one_scope_object_cannot_be_entered_twice_at_once() -> None:
    scope = attribute(tenant="a")
    with scope, pytest.raises(RuntimeError, match="already entered"), scope:
        pass
    with scope:  # but it can be reused once exited
        assert current() is not None


def test_exit_in_a_different_context_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    import contextvars

    def body() -> object:
        with attribute(tenant="a"):
            yield 1

    gen = body()
    contextvars.copy_context().run(next, gen)  # entered in one Context ...
    with caplog.at_level(logging.ERROR, logger="outlay.context"):
        gen.close()  # ... exited in another: the token cannot be reset here
    assert any("failed to detach" in r.getMessage() for r in caplog.records)
    assert current() is None


def test_labels_are_bounded_naming_the_field() -> None:
    at_the_bounds = {f"k{i}": "v" * 1024 for i in range(63)} | {"example.com/Cost_center:x-1" + "y" * 37: "v"}
    with attribute(labels=at_the_bounds) as ctx:
        assert len(ctx.labels) == 64
    for labels, problem in (
        ({f"k{i}": "v" for i in range(65)}, "at most 64 labels, got 65"),
        ({"k": "v" * 1025}, "k: values must be at most 1024 characters, got 1025"),
        ({"k" * 65: "v"}, "keys must be names"),
        ({"has space": "v"}, "keys must be names"),
        ({"1st": "v"}, "keys must be names"),
        ({"ключ": "v"}, "keys must be names"),
    ):
        with pytest.raises(InvalidInput, match=problem) as caught:
            attribute(labels=labels)
        assert caught.value.field == "labels"
        with pytest.raises(InvalidInput, match=problem):
            CostContext(tenant="a", labels=labels)
    with pytest.raises(InvalidInput, match="at most 64 labels, got 65"):
        attribute(labels={f"k{i}": "v" for i in range(60)}, **{f"m{i}": "v" for i in range(5)})


def test_nested_labels_over_the_bound_are_refused_as_the_block_opens() -> None:
    with attribute(tenant="acme", labels={f"outer{i}": "v" for i in range(40)}):
        inner = attribute(labels={f"inner{i}": "v" for i in range(40)})
        with pytest.raises(InvalidInput, match="at most 64 labels, got 80 with the enclosing") as caught:
            inner.__enter__()
        assert caught.value.field == "labels"
        assert current() is not None and len(current().labels) == 40  # type: ignore[union-attr]
        with attribute(labels={f"outer{i}": "w" for i in range(40)}) as same_keys:  # overrides: no growth
            assert len(same_keys.labels) == 40
