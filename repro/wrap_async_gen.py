"""outlay.wrap(async_gen_fn) silently carries nothing: the body runs in the consumer's context, so
work captured under acme is charged to whoever consumes it (globex)."""
import asyncio

import outlay
from outlay.context import current


async def steps():
    ctx = current()
    yield ctx and ctx.tenant, ctx and ctx.run_name


async def main() -> None:
    with outlay.attribute(tenant="acme"), outlay.run("captured"):
        wrapped = outlay.wrap(steps)          # no error
    with outlay.attribute(tenant="globex"):
        async for seen in wrapped():
            print("the wrapped body sees:", seen, "(expected ('acme', 'captured'))")


asyncio.run(main())
