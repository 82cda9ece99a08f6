"""A real Ray cluster of several nodes on this machine, bound to 127.0.0.1, for tests.

    with LoopbackCluster([{"bas_server_slot": 1}, {"bas_server_slot": 1}]) as cluster:
        cluster.address                     # "127.0.0.1:PORT", for ray.init / serving's address
        node = cluster.node_of(node_id)     # the ray._private.node.Node running node_id
        cluster.remove(node)                # a node lost (kill -9 of its processes)
        cluster.add({"bas_server_slot": 1}) # one more node

Every node (a raylet, an object store, and on the head the GCS) is a set of processes of this
machine listening on 127.0.0.1 only (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, without which the
driver looks for its raylet on the machine's outward address and hangs), with a small object
store, no dashboard, no usage stats and no worker logs copied to the driver. The head node
has no CPUs, so tasks and actors run on the added nodes (the driver's own node cannot be
removed). Node failures are detected within about a second (fast GCS health checks), so a
test that removes a node does not wait Ray's default ~15 s. The driver (this process) is
connected on entry and disconnected on exit.
"""

from __future__ import annotations

import os

__all__ = ["LoopbackCluster"]

#: settings every node of a loopback cluster needs before Ray is imported or started
ENVIRONMENT = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
#: how the head's GCS checks nodes: a lost node is declared dead after ~3 x 300 ms
HEALTH_CHECKS = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 300,
                 "health_check_timeout_ms": 300, "health_check_failure_threshold": 3}
HOST = "127.0.0.1"


class LoopbackCluster:
    """A Ray cluster of a head (no CPUs, no custom resources) and one node per entry of
    nodes (each entry: that node's custom resources). object_store_bytes: each node's store
    (Ray's minimum is 75 MiB); num_cpus: each added node's CPUs."""

    def __init__(self, nodes: list[dict[str, float]], *, object_store_bytes: int = 80 << 20,
                 num_cpus: int = 1, system_config: dict | None = None):
        self.nodes_spec = [dict(n) for n in nodes]
        self.object_store_bytes = object_store_bytes
        self.num_cpus = num_cpus
        self.system_config = {**HEALTH_CHECKS, **(system_config or {})}
        self.cluster = None
        self._count = 0

    @property
    def address(self) -> str:
        """The GCS address (HOST:PORT)."""
        return self.cluster.address

    def __enter__(self) -> LoopbackCluster:
        os.environ.update(ENVIRONMENT)  # the nodes' processes inherit it
        import ray
        import ray._private.ray_constants as constants
        from ray.cluster_utils import Cluster

        # read at Ray's import: a process that imported Ray before needs it set here
        constants.ENABLE_RAY_CLUSTER = False
        self.cluster = Cluster(initialize_head=True, head_node_args=self._args(
            {}, num_cpus=0, include_dashboard=False, _system_config=self.system_config))
        try:
            for resources in self.nodes_spec:
                self.add(resources)
            ray.init(address=self.address, log_to_driver=False)
        except BaseException:
            self.cluster.shutdown()
            raise
        return self

    def __exit__(self, *exc) -> None:
        import ray

        ray.shutdown()
        self.cluster.shutdown()

    def add(self, resources: dict[str, float] | None = None, **node_args):
        """Start one more node with these custom resources; its Node (node.node_id)."""
        node = self.cluster.add_node(**self._args(resources or {}, num_cpus=self.num_cpus,
                                                  **node_args))
        self.cluster.wait_for_nodes()
        return node

    def remove(self, node, *, graceful: bool = False) -> None:
        """Kill every process of node (graceful: let the raylet say goodbye to the GCS
        first, as a drained node does; otherwise the GCS finds it dead by health checks)."""
        self.cluster.remove_node(node, allow_graceful=graceful)

    def node_of(self, node_id: str):
        """The Node whose id (hex) is node_id."""
        return next(n for n in self.cluster.list_all_nodes() if n.node_id == node_id)

    def _args(self, resources: dict, **extra) -> dict:
        self._count += 1
        args = {"node_ip_address": HOST, "node_name": f"node-{self._count - 1}",
                "object_store_memory": self.object_store_bytes, "resources": resources,
                "dashboard_host": HOST}
        args.update(extra)
        return args
