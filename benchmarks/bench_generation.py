"""Generation throughput per core and its scaling with threads (not part of the test suite).

    python benchmarks/bench_generation.py [--events 2000000]

Prints events/s for each stage of `studies.bench` on 1 thread and on all cores.
"""

import argparse
import os

from fastsim.runtime import retain_freed_memory
from studies.bench import run_benchmarks


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=2_000_000)
    args = parser.parse_args()
    retain_freed_memory()  # as the muone command does
    cores = os.cpu_count() or 1
    for threads in sorted({1, cores}):
        for result in run_benchmarks(args.events, threads):
            print(f"{threads} thread(s)  {result['stage']:<75s} {result['events_per_s']:10.3e} events/s")


if __name__ == "__main__":
    main()
