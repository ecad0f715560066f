#!/usr/bin/python3
"""The helper process of bench/idle.py (issue 4, figure 3): opens many TLS connections to one
region and holds them idle, so the region's memory per idle connection can be read from outside.
Its own memory does not matter; it is a separate process so it never counts against the region.

Two kinds of connection:
  conns    a user's keep-alive connection: TLS (ALPN http/1.1), one GET for PATH, the whole
           response read, then idle.
  tunnels  an agent's tunnel (docs/TUNNEL.md §2-§4): TLS, the `coder-tunnel` upgrade with a
           ticket, then HTTP/2 with this side as the server: it sends its SETTINGS, ACKs the
           region's SETTINGS and answers PINGs for as long as it holds the tunnel. A tunnel
           counts once the region's SETTINGS arrived and it ACKed ours. One ticket per tunnel
           (one agent each: a second tunnel from the same agent would replace the first).

It talks to its parent in JSON lines on stdout and waits for words on stdin:
  1. warm: the first W connections (conns: each sends R requests, one after another), kept open
     and idle; prints {"phase": "warm", ...} and waits for "go".
  2. open: N more, at most C connecting at once; prints {"phase": "open", "ok", "failed",
     "errors", "secs"} and waits for "close" (or EOF).
  3. prints {"phase": "closed", "lost": connections that died while held} and exits.

Usage: idle_client.py conns HOST PORT --path /hello [--header "Name: value"]... --n N
       idle_client.py tunnels HOST PORT --tickets FILE --n N   (FILE: W+N tickets, one a line)
       common: [--warm W] [--requests R] [--concurrency C] [--timeout S]"""
import argparse
import asyncio
import collections
import json
import ssl
import struct
import sys
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# HTTP/2 frame types and flags used here (RFC 9113 §6).
DATA, HEADERS, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0, 1, 4, 6, 7, 8
ACK = 0x1
MAX_HEAD = 64 << 10


def frame(ftype, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", stream) + payload


# What the real agent sends (docs/TUNNEL.md §4): MAX_CONCURRENT_STREAMS 1024,
# INITIAL_WINDOW_SIZE 4 MiB, MAX_HEADER_LIST_SIZE 16 KiB, and the connection window to 16 MiB.
AGENT_PREFACE = frame(SETTINGS, 0, 0, struct.pack(">HIHIHI", 3, 1024, 4, 4 << 20, 6, 16 << 10)) + \
    frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", (16 << 20) - 65535))


class Conn(asyncio.Protocol):
    """One connection; done (a future) resolves True once it is established and idle, or
    raises with why it failed. lost counts connections that died after that."""

    def __init__(self, kind, request, requests, stats):
        self.kind = kind
        self.request = request  # conns: the GET; tunnels: the upgrade request
        self.left = requests
        self.stats = stats
        self.done = asyncio.get_running_loop().create_future()
        self.buf = bytearray()
        self.transport = None
        self.upgraded = False
        self.preface_seen = False
        self.got_settings = self.got_ack = False

    def fail(self, why):
        if not self.done.done():
            self.done.set_exception(RuntimeError(why))
        if self.transport:
            self.transport.abort()

    def connection_made(self, transport):
        self.transport = transport
        transport.write(self.request)

    def connection_lost(self, exc):
        if self.done.done():
            if self.done.exception() is None:
                self.stats["lost"] += 1
        else:
            self.done.set_exception(RuntimeError(f"closed: {exc or 'EOF'}"))

    def eof_received(self):
        return False  # close our side too

    def data_received(self, data):
        self.buf += data
        if self.kind == "conns":
            self.http_response()
        elif not self.upgraded:
            self.upgrade_response()
        else:
            self.h2_frames()

    # -- a user's connection --

    def http_response(self):
        """Consumes complete responses from buf; sends the next request or settles."""
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEAD:
                    self.fail("response head too large")
                return
            head = bytes(self.buf[:end]).decode("latin-1")
            status = head.split(" ", 2)[1] if " " in head else "?"
            if status != "200":
                self.fail(f"status {status}")
                return
            fields = {}
            for line in head.split("\r\n")[1:]:
                k, _, v = line.partition(":")
                fields[k.strip().lower()] = v.strip()
            body = end + 4
            if "content-length" in fields:
                total = body + int(fields["content-length"])
                if len(self.buf) < total:
                    return
            elif fields.get("transfer-encoding", "").lower() == "chunked":
                last = self.buf.find(b"0\r\n\r\n", body)
                if last < 0:
                    return
                total = last + 5
            else:
                self.fail("response without a length")
                return
            del self.buf[:total]
            self.left -= 1
            if self.left > 0:
                self.transport.write(self.request)
            elif not self.done.done():
                self.done.set_result(True)
                return

    # -- an agent's tunnel --

    def upgrade_response(self):
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > MAX_HEAD:
                self.fail("upgrade answer too large")
            return
        head = bytes(self.buf[:end]).decode("latin-1")
        if not head.startswith("HTTP/1.1 101"):
            body = bytes(self.buf[end + 4:end + 200]).decode("latin-1", "replace")
            self.fail(f"{head.splitlines()[0]} {body}")
            return
        del self.buf[:end + 4]
        self.upgraded = True
        self.transport.write(AGENT_PREFACE)
        self.h2_frames()

    def h2_frames(self):
        if not self.preface_seen:
            if len(self.buf) < len(PREFACE):
                return
            if bytes(self.buf[:len(PREFACE)]) != PREFACE:
                self.fail("no HTTP/2 client preface")
                return
            del self.buf[:len(PREFACE)]
            self.preface_seen = True
        while len(self.buf) >= 9:
            n = int.from_bytes(self.buf[:3], "big")
            if len(self.buf) < 9 + n:
                return
            ftype, flags = self.buf[3], self.buf[4]
            payload = bytes(self.buf[9:9 + n])
            del self.buf[:9 + n]
            if ftype == SETTINGS and flags & ACK:
                self.got_ack = True
            elif ftype == SETTINGS:
                self.got_settings = True
                self.transport.write(frame(SETTINGS, ACK, 0))
            elif ftype == PING and not flags & ACK:
                self.stats["pings"] += 1
                self.transport.write(frame(PING, ACK, 0, payload))
            elif ftype == GOAWAY:
                self.stats["goaway"] += 1
            if self.got_settings and self.got_ack and not self.done.done():
                self.done.set_result(True)


async def open_many(args, ctx, requests, count, first, stats):
    """Opens count connections (tickets first..first+count-1 for tunnels), at most
    args.concurrency at a time. Returns (held connections, failure reasons)."""
    loop = asyncio.get_running_loop()
    sem = asyncio.Semaphore(args.concurrency)
    held, errors = [], collections.Counter()

    async def one(i):
        async with sem:
            try:
                tr, proto = await asyncio.wait_for(loop.create_connection(
                    lambda: Conn(args.kind, requests[i], args.requests if i < args.warm else 1,
                                 stats),
                    args.host, args.port, ssl=ctx, server_hostname="localhost"), args.timeout)
                try:
                    await asyncio.wait_for(asyncio.shield(proto.done), args.timeout)
                except BaseException:
                    tr.abort()
                    raise
                held.append((tr, proto))
            except Exception as e:  # noqa: BLE001 - each failure is counted by kind, not fatal
                errors[(type(e).__name__ + ": " + str(e))[:160]] += 1

    await asyncio.gather(*(one(i) for i in range(first, first + count)))
    return held, errors


async def read_word(reader):
    line = await reader.readline()
    return line.decode().strip()


def say(doc):
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()


async def main_async(args):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # a load generator; the regions' certificates are throwaway
    ctx.set_alpn_protocols(["http/1.1"])
    host_hdr = f"Host: {args.host}:{args.port}\r\n"
    if args.kind == "conns":
        extra = "".join(h + "\r\n" for h in args.header)
        req = f"GET {args.path} HTTP/1.1\r\n{host_hdr}{extra}\r\n".encode()
        requests = [req] * (args.warm + args.n)
    else:
        with open(args.tickets) as f:
            tickets = [t.strip() for t in f if t.strip()]
        if len(tickets) < args.warm + args.n:
            sys.exit(f"idle_client: {len(tickets)} tickets for {args.warm + args.n} tunnels")
        requests = [(f"GET /api/v2/workspaceagents/me/tunnel HTTP/1.1\r\n{host_hdr}"
                     "Connection: Upgrade\r\nUpgrade: coder-tunnel\r\nCoder-Tunnel-Version: 1\r\n"
                     f"Coder-Tunnel-Ticket: {t}\r\n\r\n").encode() for t in tickets]
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    stats = collections.Counter()

    t0 = time.monotonic()
    warm, errors = await open_many(args, ctx, requests, args.warm, 0, stats)
    say({"phase": "warm", "ok": len(warm), "failed": sum(errors.values()),
         "errors": dict(errors), "secs": round(time.monotonic() - t0, 3)})
    if await read_word(reader) != "go":
        return 1
    t0 = time.monotonic()
    held, errors = await open_many(args, ctx, requests, args.n, args.warm, stats)
    say({"phase": "open", "ok": len(held), "failed": sum(errors.values()),
         "errors": dict(errors), "secs": round(time.monotonic() - t0, 3),
         "lost": stats["lost"]})
    await read_word(reader)  # "close", or EOF when the parent went away
    say({"phase": "closed", "lost": stats["lost"], "pings": stats["pings"],
         "goaway": stats["goaway"]})
    for tr, _ in warm + held:
        tr.abort()  # RST, no TIME_WAIT on this side, and no waiting for the peers
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=("conns", "tunnels"))
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--path", default="/hello")
    ap.add_argument("--header", action="append", default=[])
    ap.add_argument("--tickets")
    ap.add_argument("--warm", type=int, default=4)
    ap.add_argument("--requests", type=int, default=100, help="per warm connection (conns)")
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--timeout", type=float, default=20.0)
    args = ap.parse_args()
    if args.kind == "tunnels" and not args.tickets:
        ap.error("tunnels needs --tickets")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
