#!/usr/bin/env python
# python scripts/launch_local_workers.py --workers 2 -- trainer.epochs=5 hydra.run.dir=outputs/two-workers
"""Run one tftrain command as N MultiWorkerMirroredStrategy workers on this machine.

Each worker is `python -m tftrain trainer.strategy=multi_worker <your overrides>` with its own
TF_CONFIG (cluster on 127.0.0.1, free ports). All workers share one run directory: the chief
(worker 0) writes the outputs there, the others write nothing there but read the chief's
checkpoints to resume. Each worker's output is printed with a `[worker i]` prefix. The exit
status is the first non-zero status of a worker, else 0.

On several machines, set TF_CONFIG on each yourself (same cluster list, each its own task index)
and run the same command with trainer.strategy=multi_worker and a run directory on shared storage.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _pump(prefix: str, stream, out):
    for line in iter(stream.readline, ""):
        out.write(f"{prefix} {line}")
        out.flush()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2, help="number of worker processes (default 2)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds before all workers are killed")
    parser.add_argument("overrides", nargs="*", help="tftrain overrides (put them after --)")
    args = parser.parse_args(argv)
    overrides = list(args.overrides)
    if not any(o.startswith("hydra.run.dir=") for o in overrides):
        # Every worker must use the same directory; Hydra's default contains the start time.
        overrides.append(f"hydra.run.dir=outputs/multiworker/{time.strftime('%Y-%m-%d/%H-%M-%S')}")
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(args.workers)]}
    procs, pumps = [], []
    for i in range(args.workers):
        env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})}
        # Only the chief keeps Hydra's files (.hydra/, the log) in the shared run directory.
        quiet = [] if i == 0 else ["hydra.output_subdir=null", "hydra/job_logging=stdout"]
        cmd = [sys.executable, "-m", "tftrain", "trainer.strategy=multi_worker", *overrides, *quiet]
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        t = threading.Thread(target=_pump, args=(f"[worker {i}]", p.stdout, sys.stdout), daemon=True)
        t.start()
        procs.append(p)
        pumps.append(t)
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=None if deadline is None else max(0.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            codes.append(124)
    for t in pumps:
        t.join(timeout=5)
    return next((c for c in codes if c), 0)


if __name__ == "__main__":
    sys.exit(main())
