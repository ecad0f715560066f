#!/usr/bin/python3
"""A TCP relay that adds a fixed round-trip time to one simulated link (issue 4, figure 4).

These machines cannot delay packets in the kernel (no netem), so a link with a round trip of
RTT is simulated by a relay: it listens on a loopback port, connects to a target for every
client, and delivers each chunk in each direction d = RTT/2 after it read it. Every chunk keeps
its own deadline (a timestamped queue per direction), so chunks are never serialised behind
each other's delay and their order is kept: a chunk read at t is written at t + d even while
earlier chunks are still waiting. Bytes in flight per direction are bounded (QUEUE_CHUNKS reads);
a full queue stops reading, as a full TCP window would.

The TCP handshake. Over a real link with one-way delay d, a client's connect() returns at 2d
(SYN there, SYN-ACK back); its first bytes, sent then, reach the server at 3d; the server's
accept() returns at 3d too (the final ACK), so nothing the server sends reaches the client
before 4d. A user-space relay cannot delay the client's connect(): on loopback the kernel
completes it at once (t0), so the client sends up to one RTT early. The relay therefore charges
the handshake to the first bytes, which is where a client notices it:

  client -> server   a chunk read at t is delivered at max(t, t0 + 2d) + d
  server -> client   a chunk read at t is delivered at max(t, t0 + 3d) + d

so the first bytes arrive when they would have over a real link, and every time a client
measures after its first byte (TLS done, first response byte) equals the real link's. Only the
connect time itself (curl's %{time_connect}) reads ~0 instead of RTT; a client that connects
and then waits for the server's first bytes (a banner) sees them at 2 RTT, as over TCP. The
upstream connection is opened at once (loopback); the server sees no bytes before t0 + 3d.

Closing: an end of stream (FIN) from one side is delivered, in order, as a half-close to the
other; when both directions have ended, on any error (reset), or LINGER_S after the first half-
close, both sides are closed. Closing the relay closes every connection it carries.

Use in-process:   relays = Relays(); port = relays.add(target_port, rtt_ms=150); ...; relays.close()
or as a process:  bench/delay.py --relay LISTEN_PORT:TARGET_PORT:RTT_MS [--relay ...]
                  (LISTEN_PORT 0 picks one; prints "relay LISTEN -> TARGET RTT ms" per relay).
"""
import argparse
import asyncio
import signal
import sys
import threading

QUEUE_CHUNKS = 256  # chunks in flight per direction (each at most READ_SIZE bytes)
READ_SIZE = 65536
LINGER_S = 5.0  # a half-closed connection is closed after this long


class _Conn:
    """One client and its upstream connection, with a delayed pump per direction."""

    def __init__(self, relay, creader, cwriter):
        self.relay = relay
        self.creader, self.cwriter = creader, cwriter
        self.uwriter = None
        self.ended = 0  # directions whose end of stream was delivered
        self.closed = False
        self.tasks = []
        self.linger = None

    async def run(self):
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        d = self.relay.rtt / 2
        try:
            ureader, self.uwriter = await asyncio.open_connection(self.relay.host,
                                                                  self.relay.target)
        except OSError:
            self.close()
            return
        pumps = ((self.creader, self.uwriter, t0 + 2 * d), (ureader, self.cwriter, t0 + 3 * d))
        for reader, writer, hold in pumps:
            q = asyncio.Queue(QUEUE_CHUNKS)
            self.tasks.append(loop.create_task(self._read(reader, q, hold, d)))
            self.tasks.append(loop.create_task(self._write(writer, q)))
        try:
            await asyncio.gather(*self.tasks)
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self.close(abort=self.ended < 2)

    async def _read(self, reader, q, hold, d):
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await reader.read(READ_SIZE)
                await q.put((max(loop.time(), hold) + d, data or None))
                if not data:
                    return
        except OSError:
            self.close()

    async def _write(self, writer, q):
        loop = asyncio.get_running_loop()
        try:
            while True:
                due, data = await q.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if data is None:
                    self._half_close(writer)
                    return
                writer.write(data)
                await writer.drain()
        except OSError:
            self.close()

    def _half_close(self, writer):
        self.ended += 1
        if self.ended == 2:  # both ended: what was written gets flushed, then both close
            self.close(abort=False)
            return
        try:
            if writer.can_write_eof():
                writer.write_eof()
        except OSError:
            self.close()
            return
        self.linger = asyncio.get_running_loop().call_later(LINGER_S, self.close)

    def close(self, abort=True):
        """Closes both sides: at once (abort), or after what was delivered is flushed."""
        if self.closed:
            return
        self.closed = True
        if self.linger:
            self.linger.cancel()
        for t in self.tasks:
            if t is not asyncio.current_task():
                t.cancel()
        for w in (self.cwriter, self.uwriter):
            if w is None:
                continue
            if abort:
                w.transport.abort()
            else:  # a peer that stops reading cannot hold the connection open
                w.close()
                asyncio.get_running_loop().call_later(LINGER_S, w.transport.abort)
        self.relay.conns.discard(self)


class _Relay:
    def __init__(self, target, rtt_ms, host="127.0.0.1"):
        self.target, self.rtt, self.host = target, rtt_ms / 1000.0, host
        self.conns = set()
        self.server = None

    async def start(self, listen_port=0):
        self.server = await asyncio.start_server(self._accept, self.host, listen_port,
                                                 reuse_address=True)
        return self.server.sockets[0].getsockname()[1]

    async def _accept(self, reader, writer):
        c = _Conn(self, reader, writer)
        self.conns.add(c)
        await c.run()

    def stop(self):
        if self.server:
            self.server.close()
        for c in list(self.conns):
            c.close()


class Relays:
    """Delay relays served by one event loop in a background thread."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.relays = []
        self.thread = threading.Thread(target=self.loop.run_forever, name="delay-relays",
                                       daemon=True)
        self.thread.start()

    def add(self, target_port, rtt_ms, listen_port=0):
        """Starts a relay to 127.0.0.1:target_port adding rtt_ms of round trip; returns the
        loopback port it listens on (listen_port, or a free one when 0)."""
        r = _Relay(target_port, rtt_ms)
        port = asyncio.run_coroutine_threadsafe(r.start(listen_port), self.loop).result(10)
        self.relays.append(r)
        return port

    def close(self):
        """Closes every relay and every connection through them, then stops the thread."""
        async def stop_all():
            for r in self.relays:
                r.stop()
            await asyncio.sleep(0.05)  # let the cancelled pumps finish
        if self.thread.is_alive():
            asyncio.run_coroutine_threadsafe(stop_all(), self.loop).result(10)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
        self.loop.close()


async def _serve(specs):
    relays = []
    for listen, target, rtt in specs:
        r = _Relay(target, rtt)
        port = await r.start(listen)
        relays.append(r)
        print(f"relay {port} -> {target} {rtt:g} ms", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for r in relays:
        r.stop()


def main():
    ap = argparse.ArgumentParser(description="TCP relays adding a fixed round-trip time.")
    ap.add_argument("--relay", action="append", required=True,
                    metavar="LISTEN_PORT:TARGET_PORT:RTT_MS")
    args = ap.parse_args()
    specs = []
    for s in args.relay:
        try:
            lp, tp, rtt = s.split(":")
            specs.append((int(lp), int(tp), float(rtt)))
        except ValueError:
            ap.error(f"bad --relay {s!r}: want LISTEN_PORT:TARGET_PORT:RTT_MS")
    asyncio.run(_serve(specs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
