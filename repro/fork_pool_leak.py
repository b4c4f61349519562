"""A fork-started process pool hands the cost context that was current when its workers were forked
to every later job: globex's job and a job submitted outside any context are charged to acme,
under acme's run (spawn/forkserver workers start empty, as threads do)."""
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor

import outlay
from outlay.context import current


def job(name: str) -> tuple[str, str | None, str | None]:
    ctx = current()   # what outlay.record_llm / the SDK transport would attribute this job's spend to
    return name, ctx and ctx.tenant, ctx and ctx.run_name


def documented_job(name: str, headers: list[tuple[str, str]]) -> tuple[str, str | None, str | None]:
    with outlay.extract(headers):     # the documented queue/job hop: inject at submit, extract here
        return job(name)


if __name__ == "__main__":
    pool = ProcessPoolExecutor(2, mp_context=mp.get_context("fork"))
    with outlay.attribute(tenant="acme"), outlay.run("acme-request"):
        print(pool.submit(job, "acme's job").result())        # workers fork here, inside acme's request
    with outlay.attribute(tenant="globex"), outlay.run("globex-request"):
        print(pool.submit(job, "globex's job").result())
    print(pool.submit(job, "background job, no tenant").result())
    headers: list[tuple[str, str]] = []
    outlay.inject(headers)            # outside any context: nothing to carry (unattributed job)
    print(pool.submit(documented_job, "background job, inject/extract", headers).result())
    pool.shutdown()
