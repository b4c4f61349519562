"""A recording process for the crash tests: prints each event id once ``record`` has returned."""

from __future__ import annotations

import sys

import outlay
from outlay import Usage

home, tenant, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
outlay.configure(home)
with outlay.attribute(tenant=tenant, feature="crash"):
    for i in range(count):
        event = outlay.record_llm(
            provider="openai", model="gpt-4o-mini", usage=Usage(input_tokens=1000 + i, output_tokens=37)
        )
        print(event.event_id, event.cost, flush=True)
