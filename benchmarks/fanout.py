"""``fanout_cpu``: plain-step throughput of 1 process, 2 concurrent processes and 1 process with 2 threads
(what ``--workers 2`` buys on this machine)."""
from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from benchmarks.timing import rounded

_FANOUT_WORKER = """
import sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
from kdlib.losses import distillation_loss
from kdlib.models import make_student
torch.manual_seed(0)
m = make_student("cifar10_reduced"); m.train()
opt = torch.optim.SGD(m.parameters(), lr=0.1)
x = torch.randn(128, 3, 32, 32); y = torch.randint(0, 10, (128,)); t = torch.randn(128, 10)
def step():
    opt.zero_grad(set_to_none=True); distillation_loss(m(x), t, y, 0.5, 2.0).backward(); opt.step()
for _ in range(5):
    step()
n = int(sys.argv[2]); t0 = time.perf_counter()
for _ in range(n):
    step()
print(n / (time.perf_counter() - t0))
"""


def bench_fanout(quick: bool) -> dict[str, Any]:
    """What fanning out buys on this machine: plain CIFAR-10-student steps per second (batch 128) of one
    process with one thread, of two such processes run at the same time (the runner's ``--workers 2``), and of
    one process with two threads. Separate interpreters, started together; ``scaling`` is the aggregate over
    the one-process figure (2.0 would be perfect use of two cores)."""
    steps = "20" if quick else "300"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))

    def launch(threads: int) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", _FANOUT_WORKER, str(threads), steps], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def rates(procs: list[subprocess.Popen]) -> list[float]:
        return [float(p.communicate()[0].strip().splitlines()[-1]) for p in procs]

    try:
        one = rates([launch(1)])[0]
        two = rates([launch(1), launch(1)])
        threads2 = rates([launch(2)])[0]
    except (ValueError, IndexError, OSError) as exc:
        return {"skipped": f"{type(exc).__name__}: {exc}"[:200]}
    return dict(steps_per_s=dict(one_process=rounded(one, 3), two_processes_each=[rounded(v, 3) for v in two],
                                 two_processes_total=rounded(sum(two), 3), one_process_two_threads=rounded(threads2, 3)),
                scaling=dict(two_processes=rounded(sum(two) / one, 3), two_threads=rounded(threads2 / one, 3)),
                setup=f"CIFAR-10 student, plain SGD step at fixed (lambda1, T), batch 128, {steps} timed steps per "
                      "process after 5 warm-up steps; cpu_count in machine")
