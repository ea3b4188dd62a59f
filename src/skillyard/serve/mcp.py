"""skillyard as an MCP server: the protocol core shared by the stdio and HTTP transports.

The core is transport-free: :meth:`McpServer.receive` takes one decoded JSON-RPC
message and a ``reply`` callable; everything the server says (responses,
progress notifications) goes through ``reply``. Quick methods answer inline;
``tools/call`` and ``prompts/get`` run as tasks so ``notifications/cancelled``
can stop them. The SDK's server machinery is deliberately not used: agents start
MCP servers constantly, and importing pydantic/anyio costs more than the whole
call path (see docs/mcp.md and ``bench/bench_mcp.py``).

Protocol revisions: the handshake era (2025-03-26, 2025-06-18, 2025-11-25,
negotiated at ``initialize``) and the stateless 2026-07-28 form (``server/discover``
and a per-request ``_meta`` envelope). The first request of a connection decides
its era, as in the reference SDK.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import orjson

from skillyard.errors import InvalidArguments, SkillNotFound, SkillyardError
from skillyard.serve.mcp_tools import Exposure, ServeOptions, Tool, mcp_name

if TYPE_CHECKING:
    from skillyard.card import Card
    from skillyard.runtime import Runtime
    from skillyard.transports.base import CallResult

HANDSHAKE_VERSIONS: tuple[str, ...] = ("2025-03-26", "2025-06-18", "2025-11-25")
MODERN_VERSIONS: tuple[str, ...] = ("2026-07-28",)
LATEST_HANDSHAKE = HANDSHAKE_VERSIONS[-1]
SERVER_VERSION = "0.1.0"

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
UNSUPPORTED_VERSION = -32022

META_VERSION = "io.modelcontextprotocol/protocolVersion"
META_CLIENT_INFO = "io.modelcontextprotocol/clientInfo"
META_CLIENT_CAPS = "io.modelcontextprotocol/clientCapabilities"
META_SERVER_INFO = "io.modelcontextprotocol/serverInfo"
META_PENDING = "dev.skillyard/pending"

Reply = Callable[[dict[str, Any]], None]
MAX_HELD = 10_000


def error(msg_id: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    """A JSON-RPC error response."""
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return {"jsonrpc": "2.0", "id": msg_id, "error": err}


@dataclass(eq=False)
class Session:
    """The state of one MCP connection (stdio) or one ``Mcp-Session-Id`` (HTTP)."""

    era: Literal["", "handshake", "modern"] = ""
    version: str = LATEST_HANDSHAKE
    client: str = ""
    initialized: bool = False
    tasks: dict[Any, asyncio.Task[None]] = field(default_factory=dict)

    def cancel_all(self) -> None:
        """Stop every call still running (the connection is gone)."""
        for task in self.tasks.values():
            task.cancel()
        self.tasks.clear()


class McpServer:
    """Serves a runtime's visible cards over MCP; one instance serves many sessions."""

    def __init__(self, runtime: Runtime, options: ServeOptions | None = None) -> None:
        self.runtime = runtime
        self.options = options or ServeOptions.from_config(runtime.config)
        self.exposure = Exposure(runtime, self.options)
        self.caller = self.exposure.caller
        self._held: dict[tuple[str, bytes], str] = {}  # (tool, canonical args) -> action id
        self._info = {"name": self.options.name, "version": SERVER_VERSION}

    # -- what is exposed ---------------------------------------------------------------

    def cards(self) -> list[Card]:
        """Cards this server exposes, sorted by tool name."""
        return self.exposure.cards()

    def tools(self) -> list[Tool]:
        """The listed tools, rebuilt from the runtime's current cards."""
        return self.exposure.tools()

    def prompt_cards(self) -> list[Card]:
        return self.exposure.prompt_cards()

    def help_docs(self) -> list[tuple[str, str, Any]]:
        return self.exposure.help_docs()

    def capabilities(self) -> dict[str, Any]:
        return {"tools": {"listChanged": False}, "resources": {}, "prompts": {}}

    # -- the message loop ------------------------------------------------------------

    def receive(self, msg: Any, session: Session, reply: Reply) -> None:
        """Handle one decoded message; everything said back goes through ``reply``."""
        if not isinstance(msg, dict):
            if isinstance(msg, list):
                reply(error(None, INVALID_REQUEST, "JSON-RPC batches are not supported by MCP"))
            else:
                reply(error(None, INVALID_REQUEST, "a JSON-RPC message must be a JSON object"))
            return
        method = msg.get("method")
        has_id = "id" in msg
        msg_id = msg.get("id")
        if has_id and (
            isinstance(msg_id, bool) or not isinstance(msg_id, str | int) or msg_id is None
        ):
            if method is not None:
                reply(error(None, INVALID_REQUEST, "the request id must be a string or an integer"))
            return
        if msg.get("jsonrpc") != "2.0":
            if has_id or method is not None:
                reply(error(msg_id if has_id else None, INVALID_REQUEST, 'jsonrpc must be "2.0"'))
            return
        if method is None:
            return  # a response to us: this server sends no requests, so nothing to match
        if not isinstance(method, str):
            reply(error(msg_id if has_id else None, INVALID_REQUEST, "method must be a string"))
            return
        params = msg.get("params")
        if params is None:
            params = {}
        elif not isinstance(params, dict):
            if has_id:
                reply(error(msg_id, INVALID_PARAMS, "params must be a JSON object"))
            return
        if not has_id:
            self._notify(method, params, session)
            return
        try:
            self._request(msg_id, method, params, session, reply)
        except _RpcError as exc:
            reply(error(msg_id, exc.code, exc.message, exc.data))
        except Exception as exc:  # never let one message kill the connection
            reply(error(msg_id, INTERNAL_ERROR, f"internal error: {type(exc).__name__}"))

    def _notify(self, method: str, params: dict[str, Any], session: Session) -> None:
        if method == "notifications/initialized":
            session.initialized = True
        elif method == "notifications/cancelled":
            task = session.tasks.pop(params.get("requestId"), None)
            if task is not None:
                task.cancel()

    def _era(self, method: str, params: dict[str, Any], session: Session) -> str:
        meta = params.get("_meta")
        enveloped = isinstance(meta, dict) and META_VERSION in meta and method != "initialize"
        if session.era == "":
            session.era = "modern" if enveloped else "handshake"
        if session.era == "modern":
            if method == "initialize":
                requested = params.get("protocolVersion")
                raise _RpcError(
                    UNSUPPORTED_VERSION,
                    "this connection serves the 2026-07-28 protocol; initialize is not accepted",
                    {"supported": list(MODERN_VERSIONS), "requested": requested},
                )
            assert isinstance(meta, dict) or not enveloped
            self._check_envelope(meta)
            return str(meta[META_VERSION])  # type: ignore[index]
        if enveloped:
            raise _RpcError(
                INVALID_REQUEST,
                "this connection serves the handshake protocol era; requests carrying the "
                "2026-07-28 envelope are not accepted on it",
            )
        return session.version

    @staticmethod
    def _check_envelope(meta: Any) -> None:
        if not isinstance(meta, dict):
            raise _RpcError(
                INVALID_PARAMS,
                f"params._meta must be an object carrying {META_VERSION!r} and {META_CLIENT_CAPS!r}",
            )
        missing = [k for k in (META_VERSION, META_CLIENT_CAPS) if k not in meta]
        if missing:
            raise _RpcError(
                INVALID_PARAMS, f"params._meta is missing the envelope key(s): {', '.join(missing)}"
            )
        version = meta[META_VERSION]
        if not isinstance(version, str):
            raise _RpcError(INVALID_PARAMS, f"{META_VERSION} must be a string")
        if version not in MODERN_VERSIONS:
            raise _RpcError(
                UNSUPPORTED_VERSION,
                f"protocol version {version!r} is not supported",
                {"supported": list(MODERN_VERSIONS), "requested": version},
            )

    def _request(
        self, msg_id: Any, method: str, params: dict[str, Any], session: Session, reply: Reply
    ) -> None:
        version = self._era(method, params, session)
        modern = session.era == "modern"
        if method == "tools/call":
            if not self._answer_inline(msg_id, params, version, reply, session):
                self._spawn(msg_id, self._call_tool(msg_id, params, version, reply), session)
            return
        if method == "prompts/get":
            self._spawn(msg_id, self._get_prompt(msg_id, params, version, reply), session)
            return
        handler = _INLINE.get(method)
        if handler is None:
            raise _RpcError(METHOD_NOT_FOUND, f"method {method!r} is not supported by this server")
        result = handler(self, params, session)
        if modern:
            result.setdefault("resultType", "complete")
            if method != "ping":
                result.setdefault("_meta", {})[META_SERVER_INFO] = self._info
        reply({"jsonrpc": "2.0", "id": msg_id, "result": result})

    def _spawn(self, msg_id: Any, coro: Any, session: Session) -> None:
        if msg_id in session.tasks:
            coro.close()
            raise _RpcError(INVALID_REQUEST, f"request id {msg_id!r} is already in flight")
        tasks = session.tasks

        async def run() -> None:
            try:
                await coro
            finally:  # in the same step as the reply, so the id is free when it is read
                if tasks.get(msg_id) is task:
                    del tasks[msg_id]

        task = asyncio.get_running_loop().create_task(run())
        tasks[msg_id] = task

    # -- inline methods -----------------------------------------------------------------

    def _initialize(self, params: dict[str, Any], session: Session) -> dict[str, Any]:
        requested = params.get("protocolVersion")
        if not isinstance(requested, str):
            raise _RpcError(INVALID_PARAMS, "initialize: protocolVersion must be a string")
        version = requested if requested in HANDSHAKE_VERSIONS else LATEST_HANDSHAKE
        session.version = version
        info = params.get("clientInfo")
        if isinstance(info, dict) and isinstance(info.get("name"), str):
            session.client = info["name"][:128]
        result: dict[str, Any] = {
            "protocolVersion": version,
            "capabilities": self.capabilities(),
            "serverInfo": self._info,
        }
        if self.options.instructions:
            result["instructions"] = self.options.instructions
        return result

    def _discover(self, params: dict[str, Any], session: Session) -> dict[str, Any]:
        result: dict[str, Any] = {
            "supportedVersions": list(MODERN_VERSIONS),
            "capabilities": self.capabilities(),
            "ttlMs": 0,
            "cacheScope": "private",
        }
        if self.options.instructions:
            result["instructions"] = self.options.instructions
        return result

    def _page(self, params: dict[str, Any], items: list[Any]) -> tuple[list[Any], str | None]:
        cursor = params.get("cursor")
        start = 0
        if cursor is not None:
            if (
                not isinstance(cursor, str)
                or not cursor.startswith("o")
                or not cursor[1:].isdigit()
            ):
                raise _RpcError(INVALID_PARAMS, f"invalid cursor {cursor!r}")
            start = int(cursor[1:])
            if start > len(items):
                raise _RpcError(INVALID_PARAMS, f"cursor {cursor!r} is past the end of the list")
        end = start + self.options.page_size
        return items[start:end], (f"o{end}" if end < len(items) else None)

    def _list_tools(self, params: dict[str, Any], session: Session) -> dict[str, Any]:
        page, nxt = self._page(params, self.tools())
        structured = session.era == "modern" or session.version >= "2025-06-18"
        tools = []
        for t in page:
            wire = t.wire
            if not structured:
                wire = {k: v for k, v in wire.items() if k not in ("title", "outputSchema")}
            tools.append(wire)
        result: dict[str, Any] = {"tools": tools}
        return self._finish_list(result, nxt, session)

    @staticmethod
    def _finish_list(result: dict[str, Any], nxt: str | None, session: Session) -> dict[str, Any]:
        if nxt is not None:
            result["nextCursor"] = nxt
        if session.era == "modern":
            result["ttlMs"] = 0
            result["cacheScope"] = "private"
        return result

    def _list_prompts(self, params: dict[str, Any], session: Session) -> dict[str, Any]:
        page, nxt = self._page(params, self.prompt_cards())
        prompts = []
        for c in page:
            props = c.input_schema.get("properties") or {}
            required = set(c.input_schema.get("required") or ())
            args = [
                {
                    "name": k,
                    "description": (v or {}).get("description", "") if isinstance(v, dict) else "",
                    "required": k in required,
                }
                for k, v in sorted(props.items())
            ]
            entry: dict[str, Any] = {"name": mcp_name(c.name), "description": c.description}
            if c.title:
                entry["title"] = c.title
            if args:
                entry["arguments"] = args
            prompts.append(entry)
        return self._finish_list({"prompts": prompts}, nxt, session)

    def _list_resources(self, params: dict[str, Any], session: Session) -> dict[str, Any]:
        page, nxt = self._page(params, self.help_docs())
        resources = [
            {
                "uri": uri,
                "name": uri.removeprefix("skill://"),
                "description": f"help for the {skill_id} skill",
                "mimeType": "text/markdown" if str(path).endswith(".md") else "text/plain",
            }
            for uri, skill_id, path in page
        ]
        return self._finish_list({"resources": resources}, nxt, session)

    def _list_templates(self, params: dict[str, Any], session: Session) -> dict[str, Any]:
        return self._finish_list({"resourceTemplates": []}, None, session)

    def _read_resource(self, params: dict[str, Any], session: Session) -> dict[str, Any]:
        uri = params.get("uri")
        if not isinstance(uri, str):
            raise _RpcError(INVALID_PARAMS, "resources/read: uri must be a string")
        for known, _skill_id, path in self.help_docs():
            if known == uri:
                try:
                    text = path.read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError) as exc:
                    raise _RpcError(INTERNAL_ERROR, f"cannot read {uri}: {exc}") from exc
                mime = "text/markdown" if str(path).endswith(".md") else "text/plain"
                result: dict[str, Any] = {
                    "contents": [{"uri": uri, "mimeType": mime, "text": text}]
                }
                if session.era == "modern":
                    result["ttlMs"] = 0
                    result["cacheScope"] = "private"
                return result
        # -32002 is the handshake era's "resource not found"; 2026-07-28 retired that code
        code = INVALID_PARAMS if session.era == "modern" else -32002
        raise _RpcError(code, f"resource not found: {uri}", {"uri": uri})

    def _ping(self, params: dict[str, Any], session: Session) -> dict[str, Any]:
        return {}

    def _set_level(self, params: dict[str, Any], session: Session) -> dict[str, Any]:
        return {}

    # -- task methods -------------------------------------------------------------------

    def _sink(
        self, params: dict[str, Any], reply: Reply
    ) -> Callable[[dict[str, Any]], None] | None:
        meta = params.get("_meta")
        token = meta.get("progressToken") if isinstance(meta, dict) else None
        if token is None or isinstance(token, bool) or not isinstance(token, str | int):
            return None
        state = {"n": 0.0}

        def sink(event: dict[str, Any]) -> None:
            value = event.get("progress")
            n = state["n"]
            value = float(value) if isinstance(value, int | float) and value > n else n + 1
            state["n"] = value
            note: dict[str, Any] = {"progressToken": token, "progress": value}
            total = event.get("total")
            if isinstance(total, int | float) and not isinstance(total, bool):
                note["total"] = total
            message = event.get("message") or event.get("text")
            if isinstance(message, str):
                note["message"] = message[:1000]
            elif event.get("kind") not in (None, "progress"):
                note["message"] = str(event.get("kind"))
            reply({"jsonrpc": "2.0", "method": "notifications/progress", "params": note})

        return sink

    async def _call_tool(
        self, msg_id: Any, params: dict[str, Any], version: str, reply: Reply
    ) -> None:
        try:
            result = await self._run_tool(params, version, reply)
        except asyncio.CancelledError:
            return  # cancelled by the client: no response is sent
        except _RpcError as exc:
            reply(error(msg_id, exc.code, exc.message, exc.data))
            return
        except Exception as exc:
            reply(error(msg_id, INTERNAL_ERROR, f"internal error: {type(exc).__name__}"))
            return
        self._reply_tool(msg_id, result, version, reply)

    def _reply_tool(self, msg_id: Any, result: dict[str, Any], version: str, reply: Reply) -> None:
        if version in MODERN_VERSIONS:
            result["resultType"] = "complete"
            result["_meta"] = {META_SERVER_INFO: self._info}
        reply({"jsonrpc": "2.0", "id": msg_id, "result": result})

    def _answer_inline(
        self, msg_id: Any, params: dict[str, Any], version: str, reply: Reply, session: Session
    ) -> bool:
        """Answer a ``tools/call`` right away when the runtime can run it without awaiting
        (a sync Python skill, a cache hit): no task, no trip through the event loop.
        Returns False when the call needs the task path (``_call_tool``)."""
        if msg_id in session.tasks:
            return False  # _spawn refuses the duplicate id
        prepared = self._prepare_tool(params)
        if isinstance(prepared, dict):
            self._reply_tool(msg_id, prepared, version, reply)
            return True
        tool, card, args, key = prepared
        if key in self._held:
            return False  # resuming a held action awaits the gate
        try:
            result = self.runtime._call_inline(
                card.name, args, self.caller, self._sink(params, reply)
            )
        except SkillyardError as exc:
            self._reply_tool(msg_id, self._failed(name=params["name"], exc=exc), version, reply)
            return True
        if result is None:
            return False
        self._remember_hold(key, result)
        self._reply_tool(msg_id, self._tool_result(tool, result, version), version, reply)
        return True

    def _remember_hold(self, key: tuple[str, bytes], result: CallResult) -> None:
        if result.pending and result.decision.action_id:
            if len(self._held) >= MAX_HELD:
                self._held.pop(next(iter(self._held)))
            self._held[key] = result.decision.action_id

    def _prepare_tool(
        self, params: dict[str, Any]
    ) -> tuple[Tool, Card, dict[str, Any], tuple[str, bytes]] | dict[str, Any]:
        """The tool, card and arguments a ``tools/call`` names, or the tool error to answer."""
        name = params.get("name")
        if not isinstance(name, str):
            raise _RpcError(INVALID_PARAMS, "tools/call: name must be a string")
        tool = self.exposure.tool(name)
        if tool is None:
            raise _RpcError(INVALID_PARAMS, f"unknown tool: {name}")
        args = params.get("arguments")
        if args is None:
            args = {}
        if not isinstance(args, dict):
            return _tool_error("invalid_arguments", "arguments must be a JSON object")
        card = tool.card
        if card is None:  # per-skill tool
            method = args.get("method")
            card = tool.methods.get(method) if isinstance(method, str) else None
            if card is None:
                return _tool_error(
                    "invalid_arguments",
                    f"method must be one of {', '.join(sorted(tool.methods))}; got {method!r}",
                )
            inner = args.get("arguments", {})
            if not isinstance(inner, dict):
                return _tool_error("invalid_arguments", "arguments.arguments must be an object")
            args = inner
        # A call the gate held is finished by calling again with the same arguments:
        # that resumes the held action instead of proposing a new one.
        key = (card.name, orjson.dumps(args, option=orjson.OPT_SORT_KEYS))
        return tool, card, args, key

    @staticmethod
    def _failed(*, name: str, exc: SkillyardError) -> dict[str, Any]:
        """The answer to a call the runtime refused or that failed."""
        if isinstance(exc, SkillNotFound):
            raise _RpcError(INVALID_PARAMS, f"unknown tool: {name}") from exc
        if isinstance(exc, InvalidArguments):
            return _tool_error(exc.code, exc.message, pointer=exc.pointer)
        return _tool_error(exc.code, exc.message)

    async def _run_tool(self, params: dict[str, Any], version: str, reply: Reply) -> dict[str, Any]:
        prepared = self._prepare_tool(params)
        if isinstance(prepared, dict):
            return prepared
        tool, card, args, key = prepared
        held = self._held.pop(key, None)
        try:
            if held is not None:
                result = await self.runtime.resume(held, caller=self.caller)
            else:
                result = await self.runtime.call(
                    card.name, args, caller=self.caller, sink=self._sink(params, reply)
                )
        except SkillyardError as exc:
            return self._failed(name=params["name"], exc=exc)
        self._remember_hold(key, result)
        return self._tool_result(tool, result, version)

    def _tool_result(self, tool: Tool, result: CallResult, version: str) -> dict[str, Any]:
        if result.pending:
            d = result.decision
            text = (
                f"This call is held for approval (action id {d.action_id}). "
                f"Approve it with `skillyard approvals grant {d.action_id}`, then call "
                "the tool again with the same arguments to get its result."
            )
            out = _tool_error("pending_approval", text)
            out["_meta"] = {META_PENDING: {"action_id": d.action_id, "reason": d.reason}}
            return out
        output = result.output
        if isinstance(result.content, str):
            text = result.content
        elif isinstance(output, str):
            text = output
        else:
            text = orjson.dumps(output).decode()
        res: dict[str, Any] = {"content": [{"type": "text", "text": text}], "isError": False}
        if version >= "2025-06-18":
            if tool.wrap:
                res["structuredContent"] = {"result": output}
            elif isinstance(output, dict):
                res["structuredContent"] = output
        return res

    async def _get_prompt(
        self, msg_id: Any, params: dict[str, Any], version: str, reply: Reply
    ) -> None:
        try:
            name = params.get("name")
            card = next((c for c in self.prompt_cards() if mcp_name(c.name) == name), None)
            if card is None:
                raise _RpcError(INVALID_PARAMS, f"unknown prompt: {name!r}")
            args = params.get("arguments") or {}
            if not isinstance(args, dict):
                raise _RpcError(INVALID_PARAMS, "prompts/get: arguments must be an object")
            try:
                result = await self.runtime.call(card.name, args, caller=self.caller)
            except SkillyardError as exc:
                raise _RpcError(INVALID_PARAMS, f"{exc.code}: {exc.message}") from exc
            out = result.output
            if isinstance(out, dict) and isinstance(out.get("messages"), list):
                body: dict[str, Any] = {"messages": out["messages"]}
                if isinstance(out.get("description"), str):
                    body["description"] = out["description"]
            else:
                text = out if isinstance(out, str) else orjson.dumps(out).decode()
                body = {"messages": [{"role": "user", "content": {"type": "text", "text": text}}]}
            if version in MODERN_VERSIONS:
                body["resultType"] = "complete"
            reply({"jsonrpc": "2.0", "id": msg_id, "result": body})
        except asyncio.CancelledError:
            return
        except _RpcError as exc:
            reply(error(msg_id, exc.code, exc.message, exc.data))
        except Exception as exc:
            reply(error(msg_id, INTERNAL_ERROR, f"internal error: {type(exc).__name__}"))


def _tool_error(code: str, message: str, *, pointer: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "content": [{"type": "text", "text": f"error [{code}]: {message}"}],
        "isError": True,
    }
    return out


class _RpcError(Exception):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


_INLINE: dict[str, Callable[[McpServer, dict[str, Any], Session], dict[str, Any]]] = {
    "initialize": McpServer._initialize,
    "server/discover": McpServer._discover,
    "ping": McpServer._ping,
    "tools/list": McpServer._list_tools,
    "prompts/list": McpServer._list_prompts,
    "resources/list": McpServer._list_resources,
    "resources/templates/list": McpServer._list_templates,
    "resources/read": McpServer._read_resource,
    "logging/setLevel": McpServer._set_level,
}

__all__ = ["HANDSHAKE_VERSIONS", "MODERN_VERSIONS", "McpServer", "ServeOptions", "Session"]
