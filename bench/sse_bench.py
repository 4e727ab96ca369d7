#!/usr/bin/env python3
"""SSE streaming benchmark helpers for bench/stream.sh (Python 3 stdlib only: asyncio + raw sockets).

Sub-commands:
  relay  --listen P --upstream Q --events FILE
      Transparent TCP relay 127.0.0.1:P -> 127.0.0.1:Q. For every SSE event of the built-in mock
      ("data: {"id":"chatcmpl-mock-N", ...}") that passes upstream -> downstream it appends
      "<CLOCK_MONOTONIC ns> <N> <ordinal>" to FILE at the moment it forwards the bytes. That is the
      upstream send time of each chunk, on the same clock as the client's receive time.
  lag    --direct P --proxy Q --events FILE --streams N --rounds R --chunks C --interval-ms I
      Per round: N streams straight to the relay (client <- relay <- mock) and N through LLMProxy
      (client <- LLMProxy <- relay <- mock), started interleaved and staggered over one chunk interval.
      lag = client receive time - relay forward time, per chunk. The direct streams give the
      measurement floor (loopback + Python), the proxied ones what a client of LLMProxy sees.
  mem    --proxy Q --pid PID --streams N --chunks C --interval-ms I
      N concurrent SSE streams through the proxy while VmRSS of PID is sampled every 100 ms.
  big    --proxy Q --pid PID --path /v1/big --size BYTES --concurrency K
      One, then K concurrent slow-read downloads of a large response through the proxy, RSS sampled.
Results are printed as markdown, and as JSON to --json FILE when given.
"""
import argparse
import asyncio
import gc
import json
import os
import statistics
import sys
import time

MARK = b'"id":"chatcmpl-mock-'
DONE = b"data: [DONE]"


def now_ns():
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


class EventScanner:
    """Finds the mock's SSE events in a raw byte stream (HTTP framing included), however it is split."""

    def __init__(self):
        self.buf = b""
        self.counts = {}
        self.done = False

    def feed(self, data):
        buf = self.buf + data
        out = []
        pos = 0
        while True:
            i = buf.find(MARK, pos)
            if i < 0:
                break
            j = buf.find(b'"', i + len(MARK))
            if j < 0:
                pos = i
                break
            try:
                sid = int(buf[i + len(MARK):j])
            except ValueError:
                pos = j + 1
                continue
            k = self.counts.get(sid, 0)
            self.counts[sid] = k + 1
            out.append((sid, k))
            pos = j + 1
        if not self.done and DONE in buf:
            self.done = True
        # Keep an unfinished marker (or a tail that may start one) for the next read.
        rest = buf[pos:]
        if MARK not in rest:
            rest = rest[-(len(MARK) + 16):]
        self.buf = rest
        return out


# ---------------------------------------------------------------- relay

class _Up(asyncio.Protocol):
    def __init__(self, down, log):
        self.down = down
        self.log = log
        self.scanner = EventScanner()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        t = now_ns()
        self.down.transport.write(data)
        events = self.scanner.feed(data)
        if events:
            self.log.write("".join(f"{t} {sid} {k}\n" for sid, k in events))
            self.log.flush()

    def connection_lost(self, exc):
        self.down.transport.close()


class _Down(asyncio.Protocol):
    def __init__(self, upstream_port, log):
        self.upstream_port = upstream_port
        self.log = log
        self.up = None
        self.pending = []
        self.closed = False

    def connection_made(self, transport):
        self.transport = transport
        asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self):
        loop = asyncio.get_running_loop()
        try:
            _, up = await loop.create_connection(lambda: _Up(self, self.log), "127.0.0.1", self.upstream_port)
        except OSError:
            self.transport.close()
            return
        self.up = up
        if self.closed:
            up.transport.close()
            return
        for chunk in self.pending:
            up.transport.write(chunk)
        self.pending = []

    def data_received(self, data):
        if self.up is None:
            self.pending.append(data)
        else:
            self.up.transport.write(data)

    def connection_lost(self, exc):
        self.closed = True
        if self.up is not None:
            self.up.transport.close()


async def relay(args):
    log = open(args.events, "a", encoding="ascii", buffering=1 << 16)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Down(args.upstream, log), "127.0.0.1", args.listen, backlog=4096)
    print(f"relay ready: 127.0.0.1:{args.listen} -> 127.0.0.1:{args.upstream}", flush=True)
    async with server:
        await server.serve_forever()


# ---------------------------------------------------------------- SSE client

def chat_request(port, stream=True, extra_headers=""):
    body = json.dumps({
        "model": "gpt-4o-mini", "stream": stream,
        "messages": [{"role": "user", "content": "Write a short poem about proxies."}],
    }).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\nAccept: text/event-stream\r\nAuthorization: Bearer sk-bench\r\n"
            f"{extra_headers}Content-Length: {len(body)}\r\n\r\n").encode()
    return head + body


class StreamResult:
    __slots__ = ("route", "status", "sent_ns", "events", "done", "error", "end_ns")

    def __init__(self, route):
        self.route = route
        self.status = 0
        self.sent_ns = 0
        self.events = []  # (sid, ordinal, t_ns)
        self.done = False
        self.error = None
        self.end_ns = 0


class _SseClient(asyncio.Protocol):
    """Protocol-level client: the arrival time is taken in data_received, with no task switch in between."""

    def __init__(self, res, done):
        self.res = res
        self.done = done
        self.scanner = EventScanner()
        self.head = b""

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        t = now_ns()
        res = self.res
        if not res.status:
            self.head += data
            if b"\r\n" in self.head:
                try:
                    res.status = int(self.head.split(b" ", 2)[1])
                except (IndexError, ValueError):
                    res.status = -1
                if res.status != 200:
                    self._finish(f"HTTP {res.status}")
                    return
        for sid, k in self.scanner.feed(data):
            res.events.append((sid, k, t))
        if self.scanner.done:
            res.done = True
            self._finish(None)

    def connection_lost(self, exc):
        self._finish(None if self.res.done else f"connection closed before [DONE] ({exc})")

    def _finish(self, error):
        if not self.done.done():
            if error:
                self.res.error = error
            self.done.set_result(None)
            self.transport.close()


async def sse_stream(port, route, start_at, timeout_s):
    """One SSE request on its own connection; records the arrival time of each mock event."""
    res = StreamResult(route)
    delay = start_at - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    transport = None
    try:
        transport, _ = await asyncio.wait_for(
            loop.create_connection(lambda: _SseClient(res, done), "127.0.0.1", port), timeout_s)
        res.sent_ns = now_ns()
        transport.write(chat_request(port))
        await asyncio.wait_for(done, timeout_s)
    except (OSError, asyncio.TimeoutError, TimeoutError) as e:
        res.error = f"{type(e).__name__}: {e}"
    finally:
        res.end_ns = now_ns()
        if transport is not None:
            transport.close()
    return res


def pct(values, p):
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


def read_relay_events(path):
    sent = {}
    with open(path, encoding="ascii") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3:
                sent[(int(parts[1]), int(parts[2]))] = int(parts[0])
    return sent


async def lag(args):
    interval = args.interval_ms / 1000
    expected_events = args.chunks + 2  # role chunk, content chunks, stop chunk (all carry the id)
    timeout_s = 10 + args.chunks * interval * 3
    all_rounds = []
    # The first rounds warm up (JIT tiering of the streaming path, pooled upstream connections): they are
    # shown per round but not counted in the totals.
    for rnd in range(1 - args.warmup_rounds, args.rounds + 1):
        base = time.monotonic() + 0.05
        tasks = []
        n = 2 * args.streams
        for i in range(n):
            route = "proxy" if i % 2 else "direct"
            port = args.proxy if route == "proxy" else args.direct
            # Staggered over one chunk interval so that not every stream's chunk k lands in the same ms.
            tasks.append(sse_stream(port, route, base + i * interval / n, timeout_s))
        results = await asyncio.gather(*tasks)
        await asyncio.sleep(0.3)  # the relay's last lines reach the file
        sent = read_relay_events(args.events)
        all_rounds.append((rnd, results, sent))

    report = {"rounds": []}
    combined = {"direct": [], "proxy": []}
    ttfb = {"direct": [], "proxy": []}
    gaps = {"direct": [], "proxy": []}
    problems = []
    for rnd, results, sent in all_rounds:
        rr = {"round": rnd}
        counted = rnd >= 1
        for route in ("direct", "proxy"):
            lags = []
            ok = 0
            for res in (r for r in results if r.route == route and (counted or not (r.error or not r.done))):
                if res.error or not res.done:
                    problems.append(f"round {rnd} {route}: {res.error or 'incomplete'}")
                    continue
                if len(res.events) != expected_events:
                    problems.append(f"round {rnd} {route}: {len(res.events)} events, expected {expected_events}")
                ok += 1
                for sid, k, t in res.events:
                    s = sent.get((sid, k))
                    if s is None:
                        problems.append(f"round {rnd} {route}: event {sid}/{k} not seen by the relay")
                        continue
                    lags.append((t - s) / 1e6)
                if res.events and counted:
                    ttfb[route].append((res.events[0][2] - res.sent_ns) / 1e6)
                    content = [t for sid, k, t in res.events if 1 <= k <= args.chunks]
                    gaps[route].extend((b - a) / 1e6 for a, b in zip(content, content[1:]))
            if counted:
                combined[route].extend(lags)
            rr[route] = {"streams_ok": ok, "chunks": len(lags), "p50_ms": pct(lags, 50), "p99_ms": pct(lags, 99),
                         "max_ms": max(lags) if lags else float("nan")}
        report["rounds"].append(rr)

    def summary(values):
        return {"n": len(values), "p50_ms": pct(values, 50), "p99_ms": pct(values, 99),
                "max_ms": max(values) if values else float("nan"),
                "over_5ms": sum(1 for v in values if v > 5)}

    report["lag"] = {route: summary(v) for route, v in combined.items()}
    report["ttfb"] = {route: summary(v) for route, v in ttfb.items()}
    report["gaps"] = {route: summary(v) for route, v in gaps.items()}
    report["problems"] = problems

    out = []
    out.append(f"{args.streams} streams through LLMProxy + {args.streams} direct, concurrently; "
               f"{args.chunks} content chunks every {args.interval_ms} ms (+ role and stop chunk); "
               f"{args.rounds} counted rounds after {args.warmup_rounds} warm-up round(s).")
    out.append("")
    out.append("Per-chunk lag = client receive time − relay forward time (the relay sits between the mock and "
               "everything else, so its forward time is the upstream send time).")
    out.append("")
    out.append("| path | chunks | p50 ms | p99 ms | max ms | chunks > 5 ms |")
    out.append("|---|---:|---:|---:|---:|---:|")
    for route, label in (("direct", "direct (relay → client): measurement floor"),
                         ("proxy", "through LLMProxy (relay → LLMProxy → client)")):
        s = report["lag"][route]
        out.append(f"| {label} | {s['n']} | {s['p50_ms']:.3f} | {s['p99_ms']:.3f} | {s['max_ms']:.3f} | {s['over_5ms']} |")
    out.append("")
    out.append("| round | direct p99 / max ms | LLMProxy p99 / max ms |")
    out.append("|---:|---:|---:|")
    for rr in report["rounds"]:
        d, p = rr["direct"], rr["proxy"]
        label = rr["round"] if rr["round"] >= 1 else f"warm-up {rr['round'] + args.warmup_rounds} (not counted)"
        out.append(f"| {label} | {d['p99_ms']:.3f} / {d['max_ms']:.3f} | {p['p99_ms']:.3f} / {p['max_ms']:.3f} |")
    out.append("")
    out.append("| per stream | direct p50 / p99 / max ms | through LLMProxy p50 / p99 / max ms |")
    out.append("|---|---:|---:|")
    for key, label in (("ttfb", "first chunk after request sent"), ("gaps", f"gap between content chunks (mock: {args.interval_ms} ms)")):
        d, p = report[key]["direct"], report[key]["proxy"]
        out.append(f"| {label} | {d['p50_ms']:.3f} / {d['p99_ms']:.3f} / {d['max_ms']:.3f} | "
                   f"{p['p50_ms']:.3f} / {p['p99_ms']:.3f} / {p['max_ms']:.3f} |")
    out.append("")
    out.append(f"Errors/incomplete streams: {len(problems)}" + (" — " + "; ".join(problems[:10]) if problems else ""))
    return report, "\n".join(out)


# ---------------------------------------------------------------- memory

def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssSampler:
    def __init__(self, pid, period=0.1):
        self.pid = pid
        self.period = period
        self.samples = []  # (monotonic s, kB)
        self._task = None

    def start(self):
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self):
        while True:
            self.samples.append((time.monotonic(), rss_kb(self.pid)))
            await asyncio.sleep(self.period)

    async def stop(self):
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass

    def between(self, a, b):
        return [kb for t, kb in self.samples if a <= t <= b]


def mb(kb):
    return kb / 1024


async def mem(args):
    sampler = RssSampler(args.pid)
    sampler.start()
    await asyncio.sleep(1.0)
    t_idle_end = time.monotonic()
    idle = statistics.median(sampler.between(0, t_idle_end) or [rss_kb(args.pid)])

    open_count = 0
    all_open_at = None
    interval = args.interval_ms / 1000
    timeout_s = 30 + args.chunks * interval * 2

    async def one(i, start_at):
        nonlocal open_count, all_open_at
        delay = start_at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        res = StreamResult("proxy")
        writer = None
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", args.proxy), 10)
            writer.write(chat_request(args.proxy))
            scanner = EventScanner()
            head = b""
            first = True
            deadline = time.monotonic() + timeout_s
            while not scanner.done:
                data = await asyncio.wait_for(reader.read(65536), max(0.1, deadline - time.monotonic()))
                if not data:
                    raise ConnectionError("closed before [DONE]")
                if not res.status:
                    head += data
                    if b"\r\n" in head:
                        res.status = int(head.split(b" ", 2)[1])
                        if res.status != 200:
                            raise ConnectionError(f"HTTP {res.status}")
                n = len(scanner.feed(data))
                if first and n:
                    first = False
                    open_count += 1
                    if open_count == args.streams:
                        all_open_at = time.monotonic()
                res.events.extend(range(n))
            res.done = True
        except (OSError, asyncio.TimeoutError, TimeoutError, ConnectionError, ValueError, IndexError) as e:
            res.error = f"{type(e).__name__}: {e}"
        finally:
            if writer is not None:
                writer.close()
        return res

    t0 = time.monotonic()
    spread = args.ramp_ms / 1000
    results = await asyncio.gather(*(one(i, t0 + i * spread / args.streams) for i in range(args.streams)))
    t_end = time.monotonic()
    during = sampler.between(t0, t_end)
    after = {}
    for mark in (1, 5, 10):
        await asyncio.sleep(max(0.0, t_end + mark - time.monotonic()))
        after[mark] = rss_kb(args.pid)
    await sampler.stop()

    expected = args.chunks + 2
    ok = sum(1 for r in results if r.done and len(r.events) == expected)
    errors = [r.error or f"{len(r.events)} events" for r in results if not (r.done and len(r.events) == expected)]
    all_open_rss = None
    if all_open_at is not None:
        near = [kb for t, kb in sampler.samples if all_open_at <= t <= all_open_at + 0.5]
        all_open_rss = max(near) if near else None
    peak = max(during) if during else 0
    report = {
        "streams": args.streams, "ok": ok, "errors": len(errors), "error_samples": errors[:5],
        "idle_mb": mb(idle), "peak_mb": mb(peak), "all_open_mb": mb(all_open_rss) if all_open_rss else None,
        "after_mb": {str(k): mb(v) for k, v in after.items()}, "duration_s": t_end - t0,
        "all_open_after_s": (all_open_at - t0) if all_open_at else None,
    }
    lines = [
        f"{args.streams} concurrent SSE streams through LLMProxy ({args.chunks} chunks every {args.interval_ms} ms, "
        f"opened over {args.ramp_ms} ms); VmRSS of the proxy sampled every 100 ms.",
        "",
        "| moment | RSS MB |",
        "|---|---:|",
        f"| idle, just before (median of 1 s) | {mb(idle):.1f} |",
        f"| all {args.streams} streams open | " + (f"{mb(all_open_rss):.1f}" if all_open_rss else "never all open") + " |",
        f"| peak while streaming | {mb(peak):.1f} |",
    ]
    for k, v in after.items():
        lines.append(f"| {k} s after the last stream ended | {mb(v):.1f} ({(v / idle - 1) * 100 if idle else 0:+.0f} % vs idle) |")
    lines.append("")
    lines.append(f"Streams complete: {ok}/{args.streams} in {t_end - t0:.1f} s; errors/incomplete: {len(errors)}"
                 + (" — " + "; ".join(errors[:5]) if errors else ""))
    return report, "\n".join(lines)


async def big(args):
    sampler = RssSampler(args.pid)
    sampler.start()
    await asyncio.sleep(0.5)
    idle = statistics.median(sampler.between(0, time.monotonic()) or [rss_kb(args.pid)])

    async def download(slow):
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", args.proxy), 10)
        try:
            writer.write(f"GET {args.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            status = int(head.split(b" ", 2)[1])
            got = 0
            t0 = time.monotonic()
            while True:
                data = await asyncio.wait_for(reader.read(args.read_size), 30)
                if not data:
                    break
                got += len(data)
                if slow:
                    await asyncio.sleep(args.read_pause_ms / 1000)
            return status, got, time.monotonic() - t0, head
        finally:
            writer.close()

    results = {}
    t0 = time.monotonic()
    single = await download(False)
    t1 = time.monotonic()
    results["single"] = {"status": single[0], "bytes": single[1], "seconds": single[2],
                         "peak_mb": mb(max(sampler.between(t0, t1) or [0]))}
    t2 = time.monotonic()
    many = await asyncio.gather(*(download(True) for _ in range(args.concurrency)), return_exceptions=True)
    t3 = time.monotonic()
    await asyncio.sleep(1.0)
    after = rss_kb(args.pid)
    await sampler.stop()
    bad = [m for m in many if isinstance(m, BaseException) or m[0] != 200]
    chunked = b"chunked" in single[3].lower()
    body_ok = [m for m in many if not isinstance(m, BaseException) and m[0] == 200
               and (m[1] >= args.size if not chunked else m[1] >= args.size)]
    peak = max(sampler.between(t2, t3) or [0])
    results.update({"idle_mb": mb(idle), "concurrent": args.concurrency, "concurrent_ok": len(body_ok),
                    "concurrent_errors": len(bad), "concurrent_peak_mb": mb(peak), "after_mb": mb(after),
                    "concurrent_seconds": t3 - t2})
    size_mb = args.size / 1048576
    lines = [
        f"{size_mb:.0f} MiB response (nginx static file) through LLMProxy: once at full speed, then "
        f"{args.concurrency} at once with slow readers ({args.read_size // 1024} KiB per {args.read_pause_ms} ms); "
        "VmRSS of the proxy sampled every 100 ms.",
        "",
        "| moment | RSS MB |",
        "|---|---:|",
        f"| idle, just before | {mb(idle):.1f} |",
        f"| peak during the single download ({single[1]:,} bytes, HTTP {single[0]}, {single[2] * 1000:.0f} ms) | "
        f"{results['single']['peak_mb']:.1f} |",
        f"| peak during {args.concurrency} concurrent slow downloads ({t3 - t2:.1f} s) | {mb(peak):.1f} |",
        f"| 1 s after | {mb(after):.1f} |",
        "",
        f"Downloads complete: {len(body_ok)}/{args.concurrency} concurrent (+ the single one: "
        f"{'ok' if single[0] == 200 and single[1] >= args.size else 'FAILED'}); errors: {len(bad)}"
        + (" — " + "; ".join(str(b)[:120] for b in bad[:3]) if bad else ""),
    ]
    return results, "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("relay")
    r.add_argument("--listen", type=int, required=True)
    r.add_argument("--upstream", type=int, required=True)
    r.add_argument("--events", required=True)
    lg = sub.add_parser("lag")
    lg.add_argument("--direct", type=int, required=True)
    lg.add_argument("--proxy", type=int, required=True)
    lg.add_argument("--events", required=True)
    lg.add_argument("--streams", type=int, default=50)
    lg.add_argument("--rounds", type=int, default=3)
    lg.add_argument("--warmup-rounds", type=int, default=2)
    lg.add_argument("--chunks", type=int, default=20)
    lg.add_argument("--interval-ms", type=int, default=50)
    m = sub.add_parser("mem")
    m.add_argument("--proxy", type=int, required=True)
    m.add_argument("--pid", type=int, required=True)
    m.add_argument("--streams", type=int, default=1000)
    m.add_argument("--chunks", type=int, default=20)
    m.add_argument("--interval-ms", type=int, default=500)
    m.add_argument("--ramp-ms", type=int, default=1000)
    b = sub.add_parser("big")
    b.add_argument("--proxy", type=int, required=True)
    b.add_argument("--pid", type=int, required=True)
    b.add_argument("--path", default="/v1/big")
    b.add_argument("--size", type=int, required=True)
    b.add_argument("--concurrency", type=int, default=20)
    b.add_argument("--read-size", type=int, default=16384)
    b.add_argument("--read-pause-ms", type=int, default=10)
    for p in (lg, m, b):
        p.add_argument("--json")
    args = ap.parse_args()

    # The clients and the relay time events to the microsecond: no cyclic-GC pauses in between
    # (they allocate little and exit soon; reference counting still frees almost everything).
    gc.disable()
    if args.cmd == "relay":
        try:
            asyncio.run(relay(args))
        except KeyboardInterrupt:
            pass
        return 0
    fn = {"lag": lag, "mem": mem, "big": big}[args.cmd]
    report, text = asyncio.run(fn(args))
    print(text)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
