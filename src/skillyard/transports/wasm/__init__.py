"""WASM skills on wasmtime under the skill ABI (docs/wasm-abi.md).

The package is imported only when a wasm skill is loaded or called, so
``import skillyard`` never pulls in wasmtime or msgpack.
"""

from __future__ import annotations

from skillyard.transports.wasm.transport import WasmTransport, describe

__all__ = ["WasmTransport", "describe"]
