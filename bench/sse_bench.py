#!/usr/bin/env python3
"""SSE streaming benchmark helpers for bench/stream.sh (Python 3 stdlib only: asyncio + raw sockets).

Sub-commands:
  lagreport --records FILE --streams N --rounds R --warmup-rounds W --chunks C --interval-ms I
      Summarises the per-chunk records bench/sse_lag.c wrote (the measuring itself is done there, in C: one
      epoll thread that is both the SSE upstream and the client, so the floor is tens of microseconds).
      lag = client receive time - upstream send time, per chunk, for the streams through LLMProxy, the
      direct streams, and a second direct group ("floor") that shows what the instrument can resolve.
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
import statistics
import sys
import time

MARK = b'"id":"chatcmpl-mock-'
DONE = b"data: [DONE]"


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


def pct(values, p):
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


def group_label(group):
    return {"direct": "direct (upstream → client)", "floor": "direct again, group B: the instrument's own spread",
            "proxy": "through LLMProxy (upstream → LLMProxy → client)",
            "nginx": "through nginx (reference: proxy_buffering off)"}.get(group, f"through LLMProxy `{group}`")


def read_lag_records(path, upstream_path=None):
    """Streams ({id: (round, group, ok, n, request_ns, error)}) and chunks ({id: [(k, send_ns, recv_ns)]}) of sse_lag;
    with the records of a separate upstream process (`--role upstream`), the send times come from there."""
    sent = {}
    if upstream_path:
        with open(upstream_path, encoding="ascii") as f:
            for line in f:
                p = line.split()
                if p[0] == "U":
                    sent[(int(p[1]), int(p[2]))] = int(p[3])
    streams, records = {}, {}
    with open(path, encoding="ascii") as f:
        for line in f:
            p = line.split(" ", 7)
            if p[0] == "S":
                streams[int(p[3])] = (int(p[1]), p[2], p[4] == "1", int(p[5]), int(p[6]), p[7].strip())
            elif p[0] == "C":
                sid, k, t_sent = int(p[1]), int(p[2]), int(p[3])
                records.setdefault(sid, []).append((k, t_sent or sent.get((sid, k), 0), int(p[4])))
    return streams, records


def lagreport(args):
    streams, records = read_lag_records(args.records, args.upstream_records)
    last = args.chunks + 1
    seen = list(dict.fromkeys(s[1] for _, s in sorted(streams.items())))
    proxies = [g for g in seen if g not in ("direct", "floor")]
    names = ["direct"] + [g for g in ("floor",) if g in seen] + proxies
    rounds = sorted({s[0] for s in streams.values()})
    lags = {(r, g): [] for r in rounds for g in names}
    kinds = {(kind, g): [] for kind in ("role", "content", "last") for g in names}
    ttfb = {g: [] for g in names}
    gaps = {g: [] for g in names}
    problems = []
    for sid, (rnd, group, ok, n, req_ns, err) in sorted(streams.items()):
        if not ok:
            problems.append(f"round {rnd} {group} stream {sid}: {err}")
            continue
        chunks = sorted(records.get(sid, []))
        bad = [k for k, s, r in chunks if s == 0 or r == 0]
        if bad:
            problems.append(f"round {rnd} {group} stream {sid}: chunk(s) {bad[:5]} without a send or receive time")
            continue
        for k, s, r in chunks:
            ms = (r - s) / 1e6
            lags[(rnd, group)].append(ms)
            if rnd >= 1:
                kinds[("role" if k == 0 else "last" if k == last else "content", group)].append(ms)
        if rnd >= 1:
            ttfb[group].append((chunks[0][2] - req_ns) / 1e6)
            content = [r for k, s, r in chunks if 1 <= k <= args.chunks]
            gaps[group].extend((b - a) / 1e6 for a, b in zip(content, content[1:]))

    def summary(values):
        return {"n": len(values), "p50_ms": pct(values, 50), "p99_ms": pct(values, 99),
                "max_ms": max(values) if values else float("nan"), "over_5ms": sum(1 for v in values if v > 5)}

    counted = {g: [v for r in rounds if r >= 1 for v in lags[(r, g)]] for g in names}

    # Episodes: late chunks (> 1 ms) of one group whose send times lie within 1 ms of the previous one's receive. A
    # stall of the whole path shows as one episode of many streams' chunks; the instrument's own as one in every group.
    late = {g: [] for g in names}
    for sid, (rnd, group, ok, n, req_ns, err) in streams.items():
        if ok and rnd >= 1:
            late[group].extend((s, r) for k, s, r in records.get(sid, []) if s and r - s > 1_000_000)
    episodes = {}
    for g, chunks in late.items():
        eps = []
        for s, r in sorted(chunks):
            if eps and s <= eps[-1][1] + 1_000_000:
                eps[-1][1] = max(eps[-1][1], r)
                eps[-1][2] += 1
                eps[-1][3] = max(eps[-1][3], (r - s) / 1e6)
            else:
                eps.append([s, r, 1, (r - s) / 1e6])
        episodes[g] = {"count": len(eps), "worst": [{"chunks": e[2], "max_ms": e[3]} for e in sorted(eps, key=lambda e: -e[3])[:5]]}
    report = {"streams": args.streams, "rounds": [], "problems": problems,
              "lag": {g: summary(v) for g, v in counted.items()},
              "by_chunk": {f"{kind}/{g}": summary(v) for (kind, g), v in kinds.items()},
              "ttfb": {g: summary(v) for g, v in ttfb.items()}, "gaps": {g: summary(v) for g, v in gaps.items()},
              "episodes": episodes}
    for r in rounds:
        report["rounds"].append({"round": r, **{g: summary(lags[(r, g)]) for g in names}})
    lag = report["lag"]
    d = lag["direct"]
    report["added_by"] = {g: {"p50_ms": lag[g]["p50_ms"] - d["p50_ms"], "p99_ms": lag[g]["p99_ms"] - d["p99_ms"],
                              "max_ms": lag[g]["max_ms"] - d["max_ms"]} for g in proxies}
    report["added"] = report["added_by"]["proxy"]
    if "floor" in lag:
        f = lag["floor"]
        report["floor_diff"] = {"p50_ms": f["p50_ms"] - d["p50_ms"], "p99_ms": f["p99_ms"] - d["p99_ms"],
                                "max_ms": f["max_ms"] - d["max_ms"]}

    label = {g: group_label(g) for g in names}
    out = [f"{args.streams} streams through LLMProxy" + "".join(f", {args.streams} through `{g}`" for g in proxies[1:])
           + f" + {args.streams} direct"
           + (f" + {args.streams} direct (group B)" if "floor" in lag else "")
           + f", concurrently, interleaved, starts staggered over one chunk interval; {args.chunks} content chunks "
           f"every {args.interval_ms} ms (+ role and stop chunk); {args.rounds} counted rounds after "
           f"{args.warmup_rounds} warm-up round(s).",
           "",
           "Per-chunk lag = client receive time (the chunk's last byte out of `recv`) − upstream send time (just before "
           "its `send`), on `CLOCK_MONOTONIC`; " + ("the SSE upstream and the client are two single-threaded epoll "
           "processes (`bench/sse_lag.c --role upstream` / `--role client`), so a direct chunk wakes the client as it "
           "would wake any real client." if args.upstream_records else "one single-threaded epoll process "
           "(`bench/sse_lag.c`) is both the SSE upstream and the client, so a direct chunk is a send and a recv on one "
           "thread with no wake-up: the proxied path is charged the client's wake-up on top."),
           "",
           "| path | chunks | p50 ms | p99 ms | max ms | chunks > 5 ms |",
           "|---|---:|---:|---:|---:|---:|"]
    for g in names:
        s = lag[g]
        out.append(f"| {label[g]} | {s['n']} | {s['p50_ms']:.3f} | {s['p99_ms']:.3f} | {s['max_ms']:.3f} | {s['over_5ms']} |")
    out.append("")
    for g in proxies:
        a = report["added_by"][g]
        who = "LLMProxy" if g == "proxy" else "nginx (reference)" if g == "nginx" else f"LLMProxy `{g}`"
        out.append(f"Added by {who} (through it − direct): p50 {a['p50_ms']:+.3f} ms, **p99 {a['p99_ms']:+.3f} ms, "
                   f"max {a['max_ms']:+.3f} ms**.")
    if "floor_diff" in report:
        fd = report["floor_diff"]
        out.append(f"What the instrument resolves (direct group B − direct, same paths): p50 {fd['p50_ms']:+.3f} ms, "
                   f"p99 {fd['p99_ms']:+.3f} ms, max {fd['max_ms']:+.3f} ms.")
    out.append("")
    out.append("| round | " + " | ".join(f"{g} p99 / max ms" for g in names) + " |")
    out.append("|---:|" + "---:|" * len(names))
    for rr in report["rounds"]:
        lbl = rr["round"] if rr["round"] >= 1 else f"warm-up {rr['round'] + args.warmup_rounds} (not counted)"
        out.append(f"| {lbl} | " + " | ".join(f"{rr[g]['p99_ms']:.3f} / {rr[g]['max_ms']:.3f}" for g in names) + " |")
    out.append("")
    out.append("| counted rounds, p50 / p99 / max ms | " + " | ".join(names) + " |")
    out.append("|---|" + "---:|" * len(names))
    rows = (("role chunk (sent with the response head)", "role"), ("content chunks", "content"),
            ("last chunk (stop + [DONE] + end of body)", "last"))
    for lbl, kind in rows:
        out.append(f"| lag of the {lbl} | " + " | ".join(
            "{p50_ms:.3f} / {p99_ms:.3f} / {max_ms:.3f}".format(**report["by_chunk"][f"{kind}/{g}"]) for g in names) + " |")
    for key, lbl in (("ttfb", "first chunk after the request was sent"),
                     ("gaps", f"gap between content chunks (upstream: {args.interval_ms} ms)")):
        out.append(f"| {lbl} | " + " | ".join(
            "{p50_ms:.3f} / {p99_ms:.3f} / {max_ms:.3f}".format(**report[key][g]) for g in names) + " |")
    out.append("")
    out.append("Chunks over 1 ms late, in episodes (late chunks whose sends fall within 1 ms of the previous late one's "
               "arrival: one stall of a path makes one episode of many streams' chunks):")
    out.append("")
    for g in names:
        e = episodes[g]
        worst = ", ".join(f"{w['chunks']} chunks up to {w['max_ms']:.1f} ms" for w in e["worst"])
        out.append(f"- {label[g]}: {e['count']} episodes" + (f"; worst: {worst}" if worst else ""))
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
    lg = sub.add_parser("lagreport")
    lg.add_argument("--records", required=True)
    lg.add_argument("--upstream-records")
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

    # The clients sample RSS on a timer: no cyclic-GC pauses in between (they allocate little and exit soon;
    # reference counting still frees almost everything).
    gc.disable()
    if args.cmd == "lagreport":
        report, text = lagreport(args)
    else:
        report, text = asyncio.run({"mem": mem, "big": big}[args.cmd](args))
    print(text)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
