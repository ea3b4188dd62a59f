"""Serving skills to agents: the MCP server and the Lodestar-compatible gate sidecar."""
