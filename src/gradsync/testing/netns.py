"""Several "hosts" on one Linux machine: network namespaces joined by veth links through a switch.

Used by the multi-node fault tests and by the cost-model validation, which need real TCP between
nodes with their own addresses and shaped links, not loopback. The layout::

    node 0 (ns <tag>-n0, eth0 10.77.<k>.1) ──veth──┐
    node 1 (ns <tag>-n1, eth0 10.77.<k>.2) ──veth──┼── bridge br0 in ns <tag>-sw
    ...                                            ┘

Nothing is added to the machine's own namespace, so traffic stays between the namespaces this
module made; :meth:`Cluster.close` (or leaving the ``with`` block) deletes them. ``shape`` puts a
token-bucket filter (``tc qdisc ... tbf``; netem is not available everywhere) on both ends of
every node's link, so each node sends and receives at most ``rate`` per direction.

Needs root (CAP_NET_ADMIN) and iproute2; :func:`unavailable_reason` says why not, for skips.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any


class NetnsError(RuntimeError):
    pass


def _ip(*args: str, ns: str | None = None) -> None:
    cmd = ["ip", *(["-n", ns] if ns else []), *args]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise NetnsError(f"{' '.join(cmd)} failed: {r.stderr.strip()}")


def unavailable_reason() -> str | None:
    """None when namespaces can be made here, else why not (for ``pytest.skip``)."""
    if os.name != "posix" or not os.path.exists("/proc/self/ns/net"):
        return "network namespaces need Linux"
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return "iproute2 (ip, tc) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_NET_ADMIN)"
    probe = f"gsprobe-{uuid.uuid4().hex[:6]}"
    try:
        _ip("netns", "add", probe)
    except NetnsError as e:
        return f"cannot create a network namespace here: {e}"
    _ip("netns", "del", probe)
    return None


class Cluster:
    """``n`` namespaces with addresses ``addrs[i]`` on interface ``eth0``, fully connected."""

    IFNAME = "eth0"

    def __init__(self, n: int, subnet: int | None = None) -> None:
        if not 1 <= n <= 200:
            raise ValueError(f"a cluster has 1..200 nodes, got {n}")
        tag = f"gs{uuid.uuid4().hex[:6]}"
        k = subnet if subnet is not None else 1 + int(tag[2:], 16) % 250
        self.switch = f"{tag}-sw"
        self.nodes = [f"{tag}-n{i}" for i in range(n)]
        self.addrs = [f"10.77.{k}.{i + 1}" for i in range(n)]
        self._made: list[str] = []
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _build(self) -> None:
        _ip("netns", "add", self.switch)
        self._made.append(self.switch)
        _ip("link", "add", "br0", "type", "bridge", ns=self.switch)
        _ip("link", "set", "br0", "up", ns=self.switch)
        for i, (ns, addr) in enumerate(zip(self.nodes, self.addrs)):
            _ip("netns", "add", ns)
            self._made.append(ns)
            _ip("link", "set", "lo", "up", ns=ns)
            port = f"v{i}"
            _ip("link", "add", port, "type", "veth", "peer", "name", self.IFNAME, "netns", ns, ns=self.switch)
            _ip("link", "set", port, "master", "br0", ns=self.switch)
            _ip("link", "set", port, "up", ns=self.switch)
            _ip("addr", "add", f"{addr}/24", "dev", self.IFNAME, ns=ns)
            _ip("link", "set", self.IFNAME, "up", ns=ns)

    def shape(self, rate: str, burst: str = "256kb", latency: str = "50ms") -> None:
        """Limit every node's link to ``rate`` (a tc rate: ``1gbit``, ``100mbit``) each way."""
        for i, ns in enumerate(self.nodes):
            for where, dev in ((ns, self.IFNAME), (self.switch, f"v{i}")):
                cmd = [
                    "tc",
                    "-n",
                    where,
                    "qdisc",
                    "replace",
                    "dev",
                    dev,
                    "root",
                    "tbf",
                    "rate",
                    rate,
                    "burst",
                    burst,
                    "latency",
                    latency,
                ]
                r = subprocess.run(cmd, capture_output=True, text=True)
                if r.returncode != 0:
                    raise NetnsError(f"{' '.join(cmd)} failed: {r.stderr.strip()}")

    def set_link(self, node: int, up: bool) -> None:
        """Take node ``node``'s link down (its peers see silence, not a closed connection) or up."""
        _ip("link", "set", self.IFNAME, "up" if up else "down", ns=self.nodes[node])

    def command(self, node: int, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside node ``node``'s namespace."""
        return ["ip", "netns", "exec", self.nodes[node], *argv]

    def popen(self, node: int, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` in node ``node``."""
        return subprocess.Popen(self.command(node, argv), **kwargs)

    def run_job(
        self,
        argv: Sequence[str],
        port: int,
        nproc: int = 1,
        cwd: Any = None,
        env: Any = None,
        timeout: float = 900,
        logs: Any = None,
    ) -> None:
        """Run ``gradsync`` command ``argv`` (``[python, -m, gradsync.cli, CMD, ...]``) as one job
        over every node, ``nproc`` workers each, meeting at node 0's rendezvous on ``port``; raise
        with the nodes' stderr if any fails. ``logs`` is a folder for ``node<i>.err``."""
        logs = Path(logs or cwd or ".")
        procs, errs_out = [], []
        try:
            for i in range(len(self.nodes)):
                full = [
                    *argv,
                    "--nnodes",
                    str(len(self.nodes)),
                    "--nproc",
                    str(nproc),
                    "--rdzv-endpoint",
                    f"{self.addrs[0]}:{port}",
                    "--rdzv-id",
                    f"job{port}",
                    "--local-addr",
                    self.addrs[i],
                ]
                errs_out.append((logs / f"node{i}.err").open("w"))
                procs.append(self.popen(i, full, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=errs_out[-1]))
                if i == 0:
                    time.sleep(0.5)  # node 0 hosts the rendezvous
            deadline = time.monotonic() + timeout
            for p in procs:
                p.wait(timeout=max(1.0, deadline - time.monotonic()))
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            for f in errs_out:
                f.close()
        if any(p.returncode for p in procs):
            errs = "\n".join((logs / f"node{i}.err").read_text()[-1500:] for i in range(len(self.nodes)))
            raise NetnsError(f"{' '.join(argv[3:5])} failed on a node:\n{errs}")

    def kill_node(self, node: int, sig: int = signal.SIGKILL) -> int:
        """Send ``sig`` to every process in node ``node`` (agents and workers alike, whatever their
        session): the node "loses power". Returns how many processes were signalled."""
        return self._kill_all(self.nodes[node], sig)

    @staticmethod
    def _kill_all(ns: str, sig: int) -> int:
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
        n = 0
        for pid in pids:
            try:
                os.kill(int(pid), sig)
                n += 1
            except (ProcessLookupError, ValueError):
                pass
        return n

    def close(self) -> None:
        """Kill what still runs in them, then delete every namespace made (their veths and qdiscs
        go with them)."""
        for ns in reversed(self._made):
            self._kill_all(ns, signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self._made.clear()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
