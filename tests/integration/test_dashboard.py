"""Dashboard names: the tasks of a fit carry prefixes that say what they are.

A scheduler plugin records every task the scheduler sees during real fits; the
dashboard groups tasks by their prefix (``TaskState.prefix``), so that is what
is checked.
"""

import re

import pytest
from distributed.diagnostics.plugin import SchedulerPlugin

from dask_asyncopt import AsyncSGDClassifier
from dask_asyncopt.datasets import make_sparse_classification


class TaskRecorder(SchedulerPlugin):
    name = "asyncopt-test-task-recorder"

    def __init__(self):
        self.tasks = {}

    async def start(self, scheduler):
        self.scheduler = scheduler

    def transition(self, key, start, finish, *args, **kwargs):
        if finish in ("released", "forgotten"):
            return  # e.g. an earlier fit's tasks still being released
        ts = self.scheduler.tasks.get(key)
        if ts is not None and key not in self.tasks:
            self.tasks[key] = (ts.prefix.name, bool(ts.actor))


def _recorded(dask_scheduler, name):
    return dict(dask_scheduler.plugins[name].tasks)


@pytest.mark.parametrize("solver", ["asyb", "sync"])
def test_fit_tasks_have_meaningful_names(client, solver):
    X, y = make_sparse_classification(2000, 300, random_state=0)
    client.register_plugin(TaskRecorder())
    try:
        AsyncSGDClassifier(solver=solver, n_workers=2, n_blocks=2, max_iter=3, tol=None,
                           random_state=0).fit(X, y)
        tasks = client.run_on_scheduler(_recorded, name=TaskRecorder.name)
    finally:
        client.unregister_scheduler_plugin(TaskRecorder.name)
    by_prefix = {}
    for key, (prefix, actor) in tasks.items():
        by_prefix.setdefault(prefix, []).append((str(key), actor))

    loops = by_prefix.get(f"asyncopt-{solver}-loop", [])
    # one task per worker loop for all the fit's epochs, named after the loop and
    # the epoch it starts at
    found = sorted(tuple(map(int, re.fullmatch(
        rf"asyncopt-{solver}-loop-(\d+)-epoch-(\d+)-[0-9a-f]+", key).groups()))
        for key, _ in loops)
    assert found == [(0, 1), (1, 1)], sorted(by_prefix)
    blocks = by_prefix.get("asyncopt-block", [])
    assert sorted(re.fullmatch(r"asyncopt-block-(\d+)-[0-9a-f]+", k).group(1)
                  for k, _ in blocks) == ["0", "1"]
    assert all(actor for _, actor in blocks)  # the parameter blocks are the actors
    assert len(by_prefix.get("asyncopt-shard", [])) == 2
    assert not any(actor for prefix, items in by_prefix.items()
                   if prefix != "asyncopt-block" for _, actor in items)
