"""A TCP proxy a test can cut: a database outage for one client, the shared server untouched."""

from __future__ import annotations

import asyncio
import contextlib


class TcpProxy:
    """Forwards 127.0.0.1:<port> to ``target``; ``cut()`` drops every connection and
    refuses new ones (connection refused, as a server that is down) or, in ``reset``
    mode, accepts and at once resets them (a server that crash-loops: every connection
    is lost before its greeting, 2013); ``restore()`` forwards again on the same port.
    ``cut_after(n)`` cuts once ``n`` more bytes went to the target: in the middle of a
    statement that long."""

    def __init__(self, host: str, port: int, *, reset: bool = False) -> None:
        self.target = (host, port)
        self.reset = reset
        self.down = False
        self.port = 0
        self.server: asyncio.Server | None = None
        self.transports: set[asyncio.WriteTransport] = set()
        self.pipes: set[asyncio.Task[None]] = set()
        self.budget: int | None = None  # bytes to the target before an armed cut
        self.was_cut = asyncio.Event()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self.port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        ends = (writer.transport, up_writer.transport)
        self.transports.update(ends)
        for source, sink, upstream in ((reader, up_writer, True), (up_reader, writer, False)):
            task = asyncio.create_task(self._pipe(source, sink, ends, upstream=upstream))
            self.pipes.add(task)
            task.add_done_callback(self.pipes.discard)

    async def _pipe(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        ends: tuple[asyncio.WriteTransport, ...],
        *,
        upstream: bool,
    ) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await source.read(256 * 1024):
                sink.write(data)
                await sink.drain()
                if upstream and self.budget is not None:
                    self.budget -= len(data)
                    if self.budget <= 0:
                        self.budget = None
                        await self.cut()
        for end in ends:  # one side closed: close both
            end.abort()
            self.transports.discard(end)

    def cut_after(self, size: int) -> None:
        self.budget = size

    async def cut(self) -> None:
        self.was_cut.set()
        self.down = True
        server, self.server = (None, self.server) if self.reset else (self.server, None)
        if server is not None:
            server.close()
        for transport in list(self.transports):
            transport.abort()
        self.transports.clear()
        if server is not None:
            await server.wait_closed()

    async def restore(self) -> None:
        self.down = False
        if self.server is None:
            await self.start()

    async def close(self) -> None:
        self.reset = False  # the listening socket goes too
        await self.cut()
        for task in list(self.pipes):
            task.cancel()
        await asyncio.gather(*self.pipes, return_exceptions=True)
