"""What glibc's malloc settings cost a forward pass, as the server runs one (issue 21, issue 26 §4).

The server tunes glibc's malloc at start (``server/services/memory/allocator.py``, ``Settings.malloc_*``). A
fixed, low mmap threshold makes every tensor above it its own mapping: each conv output of a forward pass is
mapped, faulted in page by page (the kernel zeroes each page) and unmapped again. This benchmark measures it.

Each configuration runs in its own fresh process (malloc settings hold for a process's life), tuned through the
app's own ``Allocator``, and times forward passes of an untrained ResNet-18 (the cost of trained weights) on a
224×224 input in a worker thread, as an endpoint runs one. Configurations are interleaved over the rounds;
figures are the fastest forward per configuration (wall) and the median CPU time (user + system, which counts
the page faults and is disturbed much less than wall time on a busy machine), as ratios to glibc's defaults
measured in the same run.

    .venv/bin/python bench/bench_allocator.py [--rounds 3] [--forwards 20]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from harness import REPO_ROOT  # bench/harness.py (puts the repository root on sys.path)

CONFIGS = {  # name → (arena_max, mmap_threshold_bytes); 0 leaves glibc's default
    "glibc defaults": (0, 0),
    "2 arenas, dynamic mmap threshold (default)": (2, 0),
    "2 arenas, fixed 1 MiB mmap threshold (before)": (2, 1 << 20),
}

CHILD = """
import json, resource, statistics, sys, threading, time
import torch, torchvision
from server.services.memory.allocator import Allocator
Allocator({arena}, {mmap}, 0).tune()
torch.manual_seed(0)
model = torchvision.models.resnet18().eval()
x = torch.rand(1, 3, 224, 224)
walls, cpus = [], []
def run():
    for _ in range({warmup} + {forwards}):
        wall, cpu = time.perf_counter(), time.thread_time()
        with torch.inference_mode():
            model(x)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.thread_time() - cpu)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
worker = threading.Thread(target=run)
worker.start()
worker.join()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
print(json.dumps({{"wall": min(walls[{warmup}:]), "cpu": statistics.median(cpus[{warmup}:]),
                  "faults": faults / ({warmup} + {forwards})}}))
"""


def measure(arena: int, mmap: int, forwards: int) -> dict[str, float]:
    code = CHILD.format(arena=arena, mmap=mmap, warmup=3, forwards=forwards)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread: thread_time() then counts all the work
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                         check=True, timeout=600)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--forwards", type=int, default=20)
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in CONFIGS}
    for _ in range(args.rounds):
        for name, (arena, mmap) in CONFIGS.items():
            runs[name].append(measure(arena, mmap, args.forwards))
    base = runs["glibc defaults"]
    base_wall = min(r["wall"] for r in base)
    base_cpu = statistics.median(r["cpu"] for r in base)
    load = os.getloadavg()
    print(f"ResNet-18 forward, 224×224, one torch thread, in a worker thread; {args.rounds} rounds × "
          f"{args.forwards} forwards; load {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    for name, rows in runs.items():
        wall = min(r["wall"] for r in rows)
        cpu = statistics.median(r["cpu"] for r in rows)
        faults = statistics.median(r["faults"] for r in rows)
        print(f"{name:<48} wall {1000 * wall:6.1f} ms ({wall / base_wall:4.2f}×)   cpu {1000 * cpu:6.1f} ms "
              f"({cpu / base_cpu:4.2f}×)   page faults per forward {faults:7.0f}")


if __name__ == "__main__":
    main()
