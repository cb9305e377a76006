"""The handoff service: returns shares this node holds for a down node to their home."""
