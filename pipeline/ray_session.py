"""Starting or joining Ray for a command (``fixtalk run``, ``fixtalk data prepare``)."""
from __future__ import annotations

import logging
import os
from typing import Any


def start_ray(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Start a local Ray with ``num_cpus`` (default: every core), or join the cluster at
    ``address`` ('auto' or host:port), unless Ray is already initialised; True if this call
    started or joined it (the caller then shuts it down)."""
    import ray

    if ray.is_initialized():
        return False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), **kwargs)
    return True
