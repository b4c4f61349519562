"""docs/budgets.md: a [[budget]] scope="run" entry in budgets.toml with runaway guards
(max_calls / max_identical_calls / max_cost_per_minute). Do the guards stop a run?"""
from decimal import Decimal
import tempfile, os
import outlay
from outlay import budgets

toml = b'''
[[budget]]
scope = "run"
limit = "1.00"
max_calls = 40
max_identical_calls = 3
max_cost_per_minute = "0.50"
'''
path = os.path.join(tempfile.mkdtemp(), "budgets.toml")
open(path, "wb").write(toml)
policies = budgets.load_policies(path)
print("loaded:", policies)
engine = budgets.configure(budgets.BudgetEngine(budgets.InMemoryBudgetStore(), policies=policies))
fp = budgets.fingerprint("gpt-4o", [{"role": "user", "content": "same"}])
with outlay.attribute(tenant="acme"), outlay.run("agent") as run:
    for i in range(6):
        try:
            r = budgets.reserve(outlay.current(), Decimal("0.01"), model="gpt-4o", fingerprint=fp)
            budgets.settle(r, Decimal("0.01"))
            print(f"call {i + 1}: admitted")
        except outlay.OutlayError as e:
            print(f"call {i + 1}: {type(e).__name__}: {e}")
    # the run's limit of 1.00 from the file
    try:
        r = budgets.reserve(outlay.current(), Decimal("1.50"), model="gpt-4o")
        print("1.50 in a run limited to 1.00: admitted")
    except outlay.OutlayError as e:
        print(f"1.50: {type(e).__name__}: {e}")
    print("run.remaining:", run.remaining)
