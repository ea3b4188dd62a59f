"""Serving the runtime to agents: the MCP server (stdio, streamable HTTP) and the
Lodestar-compatible governance sidecar (``skillyard runtime gate``)."""
