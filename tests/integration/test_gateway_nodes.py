"""The gateway's view of nodes: a process answering for another node is not trusted."""

from __future__ import annotations

from typing import Any

from services.gateway.nodes import NodeSet
from tests.integration.conftest import LocalCluster


async def test_a_process_answering_as_another_node_counts_as_down(
    local_cluster: LocalCluster,
) -> None:
    """As after a container restart whose old address now belongs to another node."""
    node01, node02 = local_cluster.node("node01"), local_cluster.node("node02")
    rows: list[Any] = [
        {
            "name": "node01",
            "node_number": 0,
            "writer_endpoint": node02["writer"],  # the wrong process
            "reader_endpoint": node01["reader"],
            "handoff_endpoint": None,
        }
    ]
    nodes = await NodeSet.connect(rows, 5.0, 2.0, 2)
    try:
        await nodes.run_once()
        assert not nodes.is_up("node01", "writer")
        assert nodes.is_up("node01", "reader")
    finally:
        await nodes.close()
