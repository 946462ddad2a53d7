"""Watching the cluster while a run's batches stream in: a node lost mid-run must not hang it.

When a node dies, Ray restarts its stage actors elsewhere and resubmits their tasks. If the
remaining nodes cannot hold them (their CPU or GPU requests were planned for the whole cluster),
the restarted actors wait for resources forever and the run would hang without a word.
:func:`watch_nodes` consumes the batch iterator in a helper thread and, while no batch arrives,
checks the cluster's nodes: once a node that was alive at the start has been gone for
``grace_s`` seconds without a single batch arriving since, it raises :class:`NodeLost`, a
systemic error (the run stops, finished clips stay recorded, the rerun does the rest).
"""
from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable, Iterable, Iterator

_END = object()


class NodeLost(RuntimeError):
    """A node left the cluster and the run made no progress on the remaining nodes."""


def alive_nodes() -> set[str]:
    """Ids of the Ray nodes alive now (Ray must be initialised)."""
    import ray

    return {n["NodeID"] for n in ray.nodes() if n.get("Alive")}


def watch_nodes(batches: Iterable[Any], grace_s: float, poll_s: float = 2.0,
                nodes: Callable[[], set[str]] = alive_nodes) -> Iterator[Any]:
    """Yield from ``batches``; raise :class:`NodeLost` when a node is lost and nothing arrives for
    ``grace_s`` seconds after (``grace_s <= 0``: no watch, plain iteration)."""
    if grace_s <= 0:
        yield from batches
        return
    items: queue.Queue = queue.Queue(maxsize=1)

    def consume() -> None:
        try:
            for item in batches:
                items.put(item)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the driver's thread
            items.put(exc)
            return
        items.put(_END)

    threading.Thread(target=consume, name="fixtalk-batches", daemon=True).start()
    start = nodes()
    lost_since: float | None = None
    while True:
        try:
            item = items.get(timeout=poll_s)
        except queue.Empty:
            gone = start - nodes()
            if gone and lost_since is None:
                lost_since = time.monotonic()
            if lost_since is not None and time.monotonic() - lost_since > grace_s:
                names = ", ".join(sorted(g[:12] for g in gone))
                raise NodeLost(f"node {names} left the cluster and the run made no progress on the "
                               f"remaining nodes for {grace_s:.0f} s (run.node_loss_grace_s); finished "
                               "clips are recorded: run the same command again to do the rest") from None
            continue
        if item is _END:
            return
        if isinstance(item, BaseException):
            raise item
        lost_since = None if lost_since is None else time.monotonic()  # progress: wait again
        yield item
