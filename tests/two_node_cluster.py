"""A two-node Ray cluster on this machine, in a process of its own (``python -m
tests.two_node_cluster``): Ray's cluster utilities start a head (1 CPU) and a second raylet
(2 CPUs), then this prints one JSON line (``address``, ``head``, ``second`` node ids) and obeys
lines on stdin: ``remove-second`` kills the second node's raylet and workers (``kill -9``), ``quit``
(or the end of stdin) shuts the cluster down.

A process of its own, because a Ray session of the test process (the session fixture) keeps state
of its own that a cluster started beside it in the same process would share.
"""
from __future__ import annotations

import json
import sys


def main() -> None:
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    second = cluster.add_node(num_cpus=2, resources={"second_node": 1.0})
    try:
        print(json.dumps({"address": cluster.address, "head": cluster.head_node.node_id,
                          "second": second.node_id}), flush=True)
        for line in sys.stdin:
            if line.strip() == "remove-second":
                cluster.remove_node(second, allow_graceful=False)
                print("removed", flush=True)
            elif line.strip() == "quit":
                break
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
