#!/usr/bin/env bash
# Where LLMProxy's CPU goes: one `perf record` of LLMProxy (the run.sh config, every feature on) under wrk load, summed
# by area — kernel, .NET runtime, JIT compiler, native shims, and managed code by assembly — plus the top symbols.
# About 40 s. Everything it writes goes under bench/out/profile/. Needs perf (Debian: linux-perf) with sampling allowed.
# Environment (optional): BENCH_PORT_BASE=18080 BENCH_SKIP_BUILD=0 BENCH_PROFILE_WARMUP=15 BENCH_PROFILE_SECONDS=8
#   BENCH_CONNECTIONS=64 BENCH_THREADS=2 BENCH_PROFILE_ENV="VAR=value ..." (extra environment for LLMProxy)
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BASE="${BENCH_PORT_BASE:-18080}"
WARMUP="${BENCH_PROFILE_WARMUP:-15}"
SECS="${BENCH_PROFILE_SECONDS:-8}"
CONNS="${BENCH_CONNECTIONS:-64}"
THREADS="${BENCH_THREADS:-2}"
MOCK_PORTS=($((BASE + 61)) $((BASE + 62)) $((BASE + 63)))
LLM_PORT=$((BASE + 64))
ADMIN_PORT=$((BASE + 65))

PROFILE_DIR="$OUT_DIR/profile"
mkdir -p "$OUT_DIR"
rm -rf "$PROFILE_DIR"
mkdir -p "$PROFILE_DIR"
install_traps

ensure_packages
command -v perf >/dev/null 2>&1 || die "perf not installed (Debian: apt-get install linux-perf)"
check_ports_free "${MOCK_PORTS[@]}" "$LLM_PORT" "$ADMIN_PORT"
build_llmproxy
BUSY_BEFORE="$(wait_quiet)"

write_nginx_mock "$PROFILE_DIR/nginx-mock" "${MOCK_PORTS[@]}"
start_nginx "nginx mock upstream" "$PROFILE_DIR/nginx-mock"
MOCK_PID=$LAST_PID
for p in "${MOCK_PORTS[@]}"; do wait_http "nginx mock :$p" "$MOCK_PID" "http://127.0.0.1:$p/v1/chat/completions" POST 20; done

CFG="$PROFILE_DIR/llmproxy.yaml"
write_llm_config "$CFG" "$LLM_PORT" "$ADMIN_PORT" "${MOCK_PORTS[@]}"
# Perf maps name the JIT-compiled methods; W^X off keeps the code at the addresses the map names (with W^X the code
# runs from a double mapping perf cannot attribute). Both change the process a little: it is a profile, not a benchmark.
# shellcheck disable=SC2086
start_bg "LLMProxy (perf map on)" "$PROFILE_DIR/llmproxy.log" env DOTNET_PerfMapEnabled=1 DOTNET_EnableWriteXorExecute=0 \
    ${BENCH_PROFILE_ENV:-} dotnet "$LLMPROXY_DLL" -c "$CFG" --release
LLM_PID=$LAST_PID
wait_http "LLMProxy" "$LLM_PID" "http://127.0.0.1:$ADMIN_PORT/ping" GET 30
URL="http://127.0.0.1:$LLM_PORT/v1/chat/completions"

log "warm-up ${WARMUP}s (JIT tiering and PGO settle), then ${SECS}s recorded, $CONNS connections"
wrk -t"$THREADS" -c"$CONNS" -d"${WARMUP}s" --timeout 5s -s "$BENCH_DIR/post.lua" "$URL" >"$PROFILE_DIR/wrk-warmup.txt" 2>&1
perf record -F 999 -p "$LLM_PID" -o "$PROFILE_DIR/perf.data" -- sleep "$SECS" >"$PROFILE_DIR/perf-record.log" 2>&1 &
PERF_PID=$!
STARTED_PIDS+=("$PERF_PID")
wrk -t"$THREADS" -c"$CONNS" -d"$((SECS + 1))s" --timeout 5s -s "$BENCH_DIR/post.lua" "$URL" >"$PROFILE_DIR/wrk.txt" 2>&1
wait "$PERF_PID" || die "perf record failed (see $PROFILE_DIR/perf-record.log)"
forget_pid "$PERF_PID"
perf report -i "$PROFILE_DIR/perf.data" --no-children --sort dso,sym --stdio >"$PROFILE_DIR/perf-report.txt" 2>/dev/null \
    || die "perf report failed"

# Who LLMProxy's threads wake: a second run of the same load with the sched_waking tracepoint recorded instead of
# samples (tracepoints slow the process a little; this counts, it does not time). A wake-up of wrk or the upstream is
# the price of a peer that went to sleep waiting; one of LLMProxy's own threads is a hop inside the proxy.
WAKE_NOTE=""
if perf record -e sched:sched_waking -p "$LLM_PID" -o "$PROFILE_DIR/wake.data" -- sleep "$SECS" >"$PROFILE_DIR/wake-record.log" 2>&1 &
then
    PERF_PID=$!
    STARTED_PIDS+=("$PERF_PID")
    wrk -t"$THREADS" -c"$CONNS" -d"$((SECS + 1))s" --timeout 5s -s "$BENCH_DIR/post.lua" "$URL" >"$PROFILE_DIR/wrk-wake.txt" 2>&1
    if wait "$PERF_PID"; then
        perf script -i "$PROFILE_DIR/wake.data" -F comm,tid,event,trace >"$PROFILE_DIR/wake.txt" 2>/dev/null || WAKE_NOTE="perf script failed"
    else
        WAKE_NOTE="sched:sched_waking not recordable here (see ${PROFILE_DIR#"$REPO_DIR"/}/wake-record.log)"
    fi
    forget_pid "$PERF_PID"
fi

REPORT="$PROFILE_DIR/report.md"
{
    echo "## Where LLMProxy's CPU goes (perf record, $CONNS connections)"
    echo
    machine_info
    echo "- CPU busy before start (other load): ${BUSY_BEFORE}%; load: $(grep '^BENCH ' "$PROFILE_DIR/wrk.txt" | sed 's/^BENCH //; s/ .*//') in ${SECS}+1 s"
    echo
    "$(python_bin)" - "$PROFILE_DIR/perf-report.txt" <<'PY'
import collections, re, sys
areas, symbols = collections.Counter(), []
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    m = re.match(r"\s+([\d.]+)%\s+(\S.*?)\s{2,}\[(.)\]\s+(.*)$", line)
    if not m:
        continue
    pct, dso, sym = float(m.group(1)), m.group(2).strip(), m.group(4).strip()
    if dso.startswith("[kernel"):
        area = "kernel"
    elif dso.startswith("[JIT]"):
        asm = re.search(r"\[([^\]]+)\] [^ ]*::", sym)
        area = "managed: " + (asm.group(1) if asm else "(stubs)")
    elif "libclrjit" in dso:
        area = "JIT compiler (libclrjit)"
    elif "libcoreclr" in dso:
        area = "runtime (libcoreclr: GC, stubs, type system)"
    elif dso.endswith(".dll"):
        area = "managed: " + dso[:-4]  # ReadyToRun code in the assembly's image
    elif dso in ("libc.so.6", "ld-linux-x86-64.so.2", "[vdso]") or dso.startswith("libSystem."):
        area = "native: libc, loader, System.Native shims (syscall wrappers)"
    else:
        area = "other: " + dso
    areas[area] += pct
    symbols.append((pct, area, re.sub(r"\[(Optimized|OptimizedTier1|Tier0|Tier1|QuickJitted|ReadyToRun|InstrumentedTier|InstrumentedTierOptimized)\]$", "", sym)))
total = sum(areas.values()) or 1
print("Share of the samples, by area (the managed rows by assembly):")
print()
print("| area | % of samples |")
print("|---|---:|")
for area, pct in areas.most_common():
    if pct / total >= 0.002:
        print(f"| {area} | {100 * pct / total:.1f} |")
print()
print("Top symbols:")
print()
print("| % | area | symbol |")
print("|---:|---|---|")
for pct, area, sym in sorted(symbols, reverse=True)[:25]:
    print(f"| {100 * pct / total:.2f} | {area} | `{sym[:140].replace('|', '/')}` |")
PY
    echo
    echo "### Wake-ups raised by LLMProxy's threads, per request (sched:sched_waking, a separate run of ${SECS} s)"
    echo
    if [[ -n "$WAKE_NOTE" || ! -s "$PROFILE_DIR/wake.txt" ]]; then
        echo "${WAKE_NOTE:-no wake-ups recorded}"
    else
        "$(python_bin)" - "$PROFILE_DIR/wake.txt" "$PROFILE_DIR/wrk-wake.txt" <<'PY'
import collections, re, sys
requests = int(re.search(r"requests=(\d+)", open(sys.argv[2]).read()).group(1))
pairs = collections.Counter()
for line in open(sys.argv[1]):
    m = re.match(r"\s*(.+?)\s+\d+\s+sched:sched_waking:.*?comm=(\S+)", line)
    if m:
        pairs[(m.group(1), m.group(2))] += 1
print(f"{requests:,} requests.")
print()
print("| waker thread | woken | per request |")
print("|---|---|---:|")
for (waker, woken), n in pairs.most_common(12):
    print(f"| {waker} | {woken} | {n / requests:.3f} |")
PY
    fi
} >"$REPORT"
echo
cat "$REPORT"
log "done; report in ${REPORT#"$REPO_DIR"/}, raw perf report in ${PROFILE_DIR#"$REPO_DIR"/}/perf-report.txt"
