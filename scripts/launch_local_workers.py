#!/usr/bin/env python
# python scripts/launch_local_workers.py --workers 2 -- trainer.epochs=5 hydra.run.dir=outputs/two-workers
"""Run one tftrain command as N MultiWorkerMirroredStrategy workers on this machine.

Each worker is `python -m tftrain trainer.strategy=multi_worker <your overrides>` with its own
TF_CONFIG (a cluster on 127.0.0.1). All workers share one run directory: the chief (worker 0)
writes the outputs there, the others write nothing there but read the chief's checkpoints to
resume. Each worker's output is printed with a `[worker i]` prefix. The exit status is the first
non-zero status of a worker, else 0. SIGTERM or SIGINT to the launcher is passed to every worker
(they agree on a step, checkpoint it and stop; rerun the same command to resume).

Network: TensorFlow's gRPC server listens on every interface (0.0.0.0 is hard-coded in its
grpc_server_lib.cc, whatever address TF_CONFIG gives). So that the workers are reachable from
nowhere but each other, the launcher runs them in a private network namespace of their own
(`unshare --net --map-root-user`, then the loopback interface brought up): no other process can
take their ports, so they are fixed ones, and nothing outside the namespace can connect to them.
Where user namespaces are not allowed, it falls back to the host's network with free ports
(retrying if one is taken in the meantime) and says so.

On several machines, set TF_CONFIG on each yourself (same cluster list, each its own task index)
and run the same command with trainer.strategy=multi_worker and a run directory on shared
storage; restrict the ports to the cluster's network (a firewall), since TensorFlow listens on
every interface.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

PRIVATE_BASE_PORT = 20000
IN_NAMESPACE = "--in-private-network"


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def loopback_up() -> None:
    """Bring `lo` up in this (new, private) network namespace (ioctl SIOCSIFFLAGS, as `ip link`)."""
    import fcntl
    import struct

    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        flags = struct.unpack("16sH", fcntl.ioctl(s, siocgifflags, struct.pack("16sH", b"lo", 0)))[1]
        fcntl.ioctl(s, siocsifflags, struct.pack("16sH", b"lo", flags | iff_up))


def private_network_available() -> bool:
    if sys.platform != "linux" or shutil.which("unshare") is None:
        return False
    try:
        return subprocess.run(["unshare", "--net", "--map-root-user", "true"], capture_output=True,
                              timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _pump(prefix: str, stream, out):
    for line in iter(stream.readline, ""):
        out.write(f"{prefix} {line}")
        out.flush()


def run_workers(n: int, ports: list[int], overrides: list[str], timeout: float | None) -> list[int]:
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs, pumps = [], []
    for i in range(n):
        env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})}
        # Only the chief keeps Hydra's files (.hydra/, the log) in the shared run directory; the others keep
        # tftrain's console format (Hydra's `stdout` logging would print their lines without the time).
        quiet = [] if i == 0 else ["hydra.output_subdir=null", "~hydra.job_logging.handlers.file",
                                   "hydra.job_logging.root.handlers=[console]"]
        cmd = [sys.executable, "-m", "tftrain", "trainer.strategy=multi_worker", *overrides, *quiet]
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        t = threading.Thread(target=_pump, args=(f"[worker {i}]", p.stdout, sys.stdout), daemon=True)
        t.start()
        procs.append(p)
        pumps.append(t)

    def forward(signum, frame):  # a preemption reaches every worker; they agree on the step to stop at
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    deadline = None if timeout is None else time.monotonic() + timeout
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
    return codes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2, help="number of worker processes (default 2)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds before all workers are killed")
    parser.add_argument("--host-network", action="store_true",
                        help="run the workers in the host's network namespace (their ports open on every interface)")
    parser.add_argument(IN_NAMESPACE, action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="tftrain overrides (put them after --)")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    overrides = list(args.overrides)
    if not any(o.startswith("hydra.run.dir=") for o in overrides):
        # Every worker must use the same directory; Hydra's default contains the start time.
        overrides.append(f"hydra.run.dir=outputs/multiworker/{time.strftime('%Y-%m-%d/%H-%M-%S')}")
        argv = [*argv, overrides[-1]] if "--" in argv else [*argv, "--", overrides[-1]]
    if args.in_private_network:
        loopback_up()
        ports = [PRIVATE_BASE_PORT + i for i in range(args.workers)]
        print(f"[launcher] {args.workers} workers on 127.0.0.1:{ports[0]}.. in a private network namespace "
              "(reachable from no other process)", flush=True)
        return next((c for c in run_workers(args.workers, ports, overrides, args.timeout) if c), 0)
    if not args.host_network and private_network_available():
        inner = subprocess.Popen(["unshare", "--net", "--map-root-user", sys.executable, os.path.abspath(__file__),
                                  IN_NAMESPACE, *argv])

        def forward(signum, frame):
            inner.send_signal(signum)

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, forward)
        return inner.wait()
    print("[launcher] no private network namespace here (or --host-network): the workers' gRPC servers listen on "
          "every interface of this machine while they run", flush=True)
    for attempt in range(3):  # a free port can be taken between choosing it and the worker binding it
        ports = free_ports(args.workers)
        codes = run_workers(args.workers, ports, overrides, args.timeout)
        # 2: a tftrain error (bad config or data), 124: the timeout, 130/143: stopped by a signal.
        if not any(c not in (0, 2, 124, 130, 143) for c in codes) or attempt == 2:
            return next((c for c in codes if c), 0)
        print(f"[launcher] a worker failed (ports {ports} may have been taken): retrying with new ports", flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
