"""Serving the runtime to agents: the MCP server (stdio, streamable HTTP)."""
