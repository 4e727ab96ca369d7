#!/usr/bin/env bash
# LLMProxy vs nginx-as-reverse-proxy, both in front of the same nginx mock upstream (3 ports).
# Usage: bench/run.sh            throughput/latency comparison (about 3 minutes)
#        bench/run.sh --stream   the streaming/memory benchmark instead (bench/stream.sh)
#        bench/run.sh --all      both, one after the other
# Environment (optional): BENCH_ROUNDS=3 BENCH_DURATION=10 BENCH_LAT_DURATION=5 BENCH_CONNECTIONS=64
#   BENCH_THREADS=2 BENCH_WARMUP=8 BENCH_PORT_BASE=18080 BENCH_NGINX_WORKERS=auto BENCH_SKIP_BUILD=0
#   BENCH_WAIT_QUIET=0 BENCH_MAX_OTHER_LOAD=10 BENCH_RETRY_BUDGET=60 BENCH_FEATURES=all BENCH_AB=0
#   BENCH_VARIANTS="name:VAR=value,VAR=value ..." BENCH_PERF=1 BENCH_PERF_DURATION=5
# Everything it writes goes under bench/out/. See bench/README.md for what the numbers mean.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

case "${1:-}" in
    --stream) exec "$BENCH_DIR/stream.sh" ;;
    --all) "$BENCH_DIR/run.sh"; exec env BENCH_SKIP_BUILD=1 "$BENCH_DIR/stream.sh" ;;
    "") ;;
    *) die "unknown argument '$1' (use --stream, --all or nothing)" ;;
esac

ROUNDS="${BENCH_ROUNDS:-3}"
DURATION="${BENCH_DURATION:-10}"
LAT_DURATION="${BENCH_LAT_DURATION:-5}"
CONNS="${BENCH_CONNECTIONS:-64}"
THREADS="${BENCH_THREADS:-2}"
WARMUP="${BENCH_WARMUP:-8}"
BASE="${BENCH_PORT_BASE:-18080}"

MOCK_PORTS=($((BASE + 1)) $((BASE + 2)) $((BASE + 3)))
NGINX_PROXY_PORT=$((BASE + 10))
LLM_PORT=$((BASE + 11))
LLM_ADMIN_PORT=$((BASE + 12))

RUN_DIR="$OUT_DIR/run"
RESULTS_TSV="$RUN_DIR/results.tsv"
DISCARDED_TSV="$RUN_DIR/discarded.tsv"
MAX_OTHER="${BENCH_MAX_OTHER_LOAD:-10}"
RETRY_LEFT="${BENCH_RETRY_BUDGET:-60}"

mkdir -p "$OUT_DIR"
rm -rf "$RUN_DIR"
mkdir -p "$RUN_DIR/wrk"
install_traps

ensure_packages
check_ports_free "${MOCK_PORTS[@]}" "$NGINX_PROXY_PORT" "$LLM_PORT" "$LLM_ADMIN_PORT"
build_llmproxy

BUSY_BEFORE="$(wait_quiet)"

# --- upstream: nginx mock on 3 ports ---------------------------------------------------------------
MOCK_PREFIX="$RUN_DIR/nginx-mock"
write_nginx_mock "$MOCK_PREFIX" "${MOCK_PORTS[@]}"
start_nginx "nginx mock upstream" "$MOCK_PREFIX"
MOCK_PID=$LAST_PID
for p in "${MOCK_PORTS[@]}"; do wait_http "nginx mock :$p" "$MOCK_PID" "http://127.0.0.1:$p/v1/chat/completions" POST 20; done

# --- nginx as reverse proxy --------------------------------------------------------------------------
NGINX_PREFIX="$RUN_DIR/nginx-proxy"
write_nginx_proxy "$NGINX_PREFIX" "$NGINX_PROXY_PORT" "${MOCK_PORTS[@]}"
start_nginx "nginx proxy" "$NGINX_PREFIX"
NGINX_PID=$LAST_PID
wait_http "nginx proxy" "$NGINX_PID" "http://127.0.0.1:$NGINX_PROXY_PORT/v1/chat/completions" POST 20

# --- LLMProxy: the default build, plus one process per variant (BENCH_AB / BENCH_VARIANTS) ----------------
# A variant is "name:VAR=value,VAR=value": the same binary and config with extra environment variables, measured
# as a target of its own in the same rounds (an A/B in one run). BENCH_AB=1 measures each change of issue 13 off.
ab_variants() {
    local n
    n="$(nproc)"
    echo "all-off:DOTNET_SYSTEM_NET_SOCKETS_THREAD_COUNT=$n,LLMPROXY_ONE_SEND=0,LLMPROXY_LOG_FLUSH=timer" \
        "threads-$n:DOTNET_SYSTEM_NET_SOCKETS_THREAD_COUNT=$n" \
        "two-sends:LLMPROXY_ONE_SEND=0" \
        "log-timer:LLMPROXY_LOG_FLUSH=timer"
}
VARIANTS_SPEC="${BENCH_VARIANTS:-}"
if [[ -z "$VARIANTS_SPEC" && "${BENCH_AB:-0}" == 1 ]]; then
    VARIANTS_SPEC="$(ab_variants)"
fi
declare -A PORT_OF=() ADMIN_OF=() PIDS_OF=() ENV_OF=()
LLM_TARGETS=(llmproxy)
PORT_OF[llmproxy]=$LLM_PORT
ADMIN_OF[llmproxy]=$LLM_ADMIN_PORT
ENV_OF[llmproxy]=""
vi=0
for spec in $VARIANTS_SPEC; do
    name="${spec%%:*}"
    [[ "$name" =~ ^[a-z0-9][a-z0-9-]*$ && "$spec" == *:* ]] || die "BENCH_VARIANTS: '$spec' is not name:VAR=value[,VAR=value] (name: a-z, 0-9, -)"
    envs="${spec#*:}"
    t="llmproxy:$name"
    [[ -z "${PORT_OF[$t]:-}" ]] || die "BENCH_VARIANTS: variant '$name' given twice"
    LLM_TARGETS+=("$t")
    PORT_OF[$t]=$((BASE + 30 + vi))
    ADMIN_OF[$t]=$((BASE + 50 + vi))
    ENV_OF[$t]="${envs//,/ }"
    vi=$((vi + 1))
done
((vi <= 20)) || die "BENCH_VARIANTS: at most 20 variants"
for t in "${LLM_TARGETS[@]:1}"; do check_ports_free "${PORT_OF[$t]}" "${ADMIN_OF[$t]}"; done

for t in "${LLM_TARGETS[@]}"; do
    tag="${t#llmproxy}"; tag="${tag#:}"
    cfg="$RUN_DIR/llmproxy${tag:+-$tag}.yaml"
    write_llm_config "$cfg" "${PORT_OF[$t]}" "${ADMIN_OF[$t]}" "${MOCK_PORTS[@]}"
    dotnet "$LLMPROXY_DLL" -t -c "$cfg" >"$RUN_DIR/llmproxy-config-check.log" 2>&1 \
        || { cat "$RUN_DIR/llmproxy-config-check.log" >&2; die "LLMProxy rejected $cfg"; }
    # shellcheck disable=SC2086
    start_bg "LLMProxy${tag:+ [$tag: ${ENV_OF[$t]}]}" "$RUN_DIR/llmproxy${tag:+-$tag}.log" env ${ENV_OF[$t]} dotnet "$LLMPROXY_DLL" -c "$cfg" --release
    PIDS_OF[$t]=$LAST_PID
done
LLM_PID=${PIDS_OF[llmproxy]}
LLM_LOG="$RUN_DIR/llmproxy.log"
for t in "${LLM_TARGETS[@]}"; do
    wait_http "$t admin" "${PIDS_OF[$t]}" "http://127.0.0.1:${ADMIN_OF[$t]}/ping" GET 30
    wait_http "$t forward" "${PIDS_OF[$t]}" "http://127.0.0.1:${PORT_OF[$t]}/v1/chat/completions" POST 30 "Authorization: Bearer $BENCH_CLIENT_KEY"
done

declare -A DESC_OF=()
# --- BENCH_BASELINE=<commit>: LLMProxy built at that commit, same config, as a target of its own -------------
# Before/after in one run: what a change bought is only measurable against a baseline measured in the same rounds.
if [[ -n "${BENCH_BASELINE:-}" ]]; then
    BASE_REV="$(git -C "$REPO_DIR" rev-parse --short "${BENCH_BASELINE}^{commit}" 2>/dev/null)" \
        || die "BENCH_BASELINE: '$BENCH_BASELINE' is not a commit of this repository"
    BASE_SRC="$OUT_DIR/baseline-src"
    rm -rf "$BASE_SRC" "$OUT_DIR/baseline"
    mkdir -p "$BASE_SRC"
    git -C "$REPO_DIR" archive "$BASE_REV" src Directory.Build.props Directory.Packages.props global.json | tar -x -C "$BASE_SRC"
    log "building the baseline $BASE_REV (dotnet publish -c Release)"
    (cd "$BASE_SRC" && dotnet publish src/LLMProxy -c Release -o "$OUT_DIR/baseline" --nologo -v quiet) \
        >"$OUT_DIR/baseline-build.log" 2>&1 || { tail -30 "$OUT_DIR/baseline-build.log" >&2; die "building the baseline $BASE_REV failed"; }
    t="llmproxy:baseline"
    PORT_OF[$t]=$((BASE + 75))
    ADMIN_OF[$t]=$((BASE + 76))
    check_ports_free "${PORT_OF[$t]}" "${ADMIN_OF[$t]}"
    cfg="$RUN_DIR/llmproxy-baseline.yaml"
    write_llm_config "$cfg" "${PORT_OF[$t]}" "${ADMIN_OF[$t]}" "${MOCK_PORTS[@]}"
    dotnet "$OUT_DIR/baseline/llmproxy.dll" -t -c "$cfg" >"$RUN_DIR/llmproxy-config-check.log" 2>&1 \
        || { cat "$RUN_DIR/llmproxy-config-check.log" >&2; die "the baseline $BASE_REV rejected $cfg"; }
    start_bg "LLMProxy baseline $BASE_REV" "$RUN_DIR/llmproxy-baseline.log" dotnet "$OUT_DIR/baseline/llmproxy.dll" -c "$cfg" --release
    PIDS_OF[$t]=$LAST_PID
    ENV_OF[$t]=""
    DESC_OF[$t]="LLMProxy built at $BASE_REV (BENCH_BASELINE), the same config and environment"
    wait_http "$t admin" "$LAST_PID" "http://127.0.0.1:${ADMIN_OF[$t]}/ping" GET 30
    wait_http "$t forward" "$LAST_PID" "http://127.0.0.1:${PORT_OF[$t]}/v1/chat/completions" POST 30 "Authorization: Bearer $BENCH_CLIENT_KEY"
    LLM_TARGETS+=("$t")
fi

# --- BENCH_FLOOR=1: the floor of any Kestrel-based proxy here (bench/floor), as targets of their own ---------
# floor-kestrel: Kestrel answers the mock's body itself (no upstream exchange); floor-yarp: a bare YARP forwarder
# (no transforms, logging or metrics) to the same mock; floor-raw: Kestrel + the least an HTTP/1.1 forward on raw
# .NET sockets can do. All with LLMProxy's socket settings on this machine.
if [[ "${BENCH_FLOOR:-0}" == 1 ]]; then
    log "building bench/floor (dotnet publish -c Release)"
    (cd "$REPO_DIR" && dotnet publish bench/floor -c Release -o "$OUT_DIR/floor" --nologo -v quiet) \
        >"$OUT_DIR/floor-build.log" 2>&1 || { tail -30 "$OUT_DIR/floor-build.log" >&2; die "dotnet publish bench/floor failed"; }
    FLOOR_ENV=(DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS=1)
    (($(nproc) <= 2)) && FLOOR_ENV+=(DOTNET_SYSTEM_NET_SOCKETS_THREAD_COUNT=1)
    fi_=0
    # shellcheck disable=SC2206
    FLOOR_MODES=(${BENCH_FLOOR_MODES:-kestrel yarp raw raw-headers httpclient})
    for mode in "${FLOOR_MODES[@]}"; do
        [[ $mode =~ ^(kestrel|yarp|raw|raw-headers|httpclient)$ ]] || die "BENCH_FLOOR_MODES: unknown mode '$mode'"
        t="llmproxy:floor-$mode"
        PORT_OF[$t]=$((BASE + 70 + fi_))
        check_ports_free "${PORT_OF[$t]}"
        if [[ $mode == kestrel ]]; then fargs=(); else fargs=("${MOCK_PORTS[@]}"); fi
        start_bg "floor ($mode)" "$RUN_DIR/floor-$mode.log" env "${FLOOR_ENV[@]}" FLOOR_ANSWER="$MOCK_ANSWER" \
            dotnet "$OUT_DIR/floor/floor.dll" "$mode" "${PORT_OF[$t]}" "${fargs[@]}"
        PIDS_OF[$t]=$LAST_PID
        ENV_OF[$t]=""
        case $mode in
            kestrel) what="Kestrel answers the mock's body itself, no upstream exchange" ;;
            yarp) what="a bare YARP forwarder, SocketsHttpHandler, no transforms/logging/metrics" ;;
            raw) what="Kestrel + pooled raw upstream sockets, fixed head + body in one send, answer by Content-Length: no YARP, no HttpClient, no header forwarding" ;;
            raw-headers) what="floor-raw forwarding path, query and end-to-end headers both ways (strings allocated as a forwarder would)" ;;
            httpclient) what="a forwarder on HttpClient without YARP: headers copied both ways, buffered body as one ByteArrayContent" ;;
        esac
        DESC_OF[$t]="not LLMProxy: bench/floor $mode ($what), with ${FLOOR_ENV[*]}"
        LLM_TARGETS+=("$t")
        wait_http "floor $mode" "$LAST_PID" "http://127.0.0.1:${PORT_OF[$t]}/v1/chat/completions" POST 30
        fi_=$((fi_ + 1))
    done
fi

# --- preflight: every target answers a real POST with the mock's chat.completion -------------------
TARGETS=(direct nginx "${LLM_TARGETS[@]}")
target_url() {
    case "$1" in
        direct) echo "http://127.0.0.1:${MOCK_PORTS[0]}/v1/chat/completions" ;;
        nginx) echo "http://127.0.0.1:$NGINX_PROXY_PORT/v1/chat/completions" ;;
        *) echo "http://127.0.0.1:${PORT_OF[$1]}/v1/chat/completions" ;;
    esac
}
# The measured processes of a target: nginx = master + workers (cpu_ticks adds the children), LLMProxy = the dotnet process.
target_pids() {
    case "$1" in
        direct) echo "" ;;
        nginx) echo "$NGINX_PID" ;;
        *) echo "${PIDS_OF[$1]}" ;;
    esac
}
for t in "${TARGETS[@]}"; do
    body="$(curl -s --max-time 5 -X POST -H 'Content-Type: application/json' -H "Authorization: Bearer $BENCH_CLIENT_KEY" -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}' -w '\n%{http_code}' "$(target_url "$t")")" \
        || die "preflight: $t did not answer"
    [[ "${body##*$'\n'}" == 200 && "$body" == *'"chat.completion"'* ]] || die "preflight: $t answered unexpectedly: $body"
done
log "preflight ok: ${TARGETS[*]} all answer the mock's chat.completion"

# --- perf stat: syscalls by kind, wake-ups and context switches per request ----------------------------------
# Counted in a separate run right after each throughput run of a proxy (BENCH_PERF_DURATION s, same load): enabling
# syscall tracepoints puts every system call of the traced process on the kernel's slow path, which would inflate the
# CPU numbers of the throughput run itself. BENCH_PERF=0 skips it.
PERF_SYSCALLS=(read write readv writev recvfrom sendto recvmsg sendmsg epoll_wait epoll_pwait epoll_ctl futex sched_yield accept4 close madvise mprotect)
PERF_ARGS=() PERF_KEYS=() PERF_NOTE=""
setup_perf() {
    [[ "${BENCH_PERF:-1}" != 0 ]] || { PERF_NOTE="perf counting off (BENCH_PERF=0)"; return 0; }
    if ! command -v perf >/dev/null 2>&1; then
        if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
            log "installing linux-perf with apt-get (for syscall and scheduler counts)"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends linux-perf >>"$OUT_DIR/apt.log" 2>&1 || true
        fi
        command -v perf >/dev/null 2>&1 || { PERF_NOTE="perf not installed (Debian: apt-get install linux-perf): no syscall/scheduler counts"; return 0; }
    fi
    local err
    if ! err="$(perf stat -x, -e raw_syscalls:sys_enter,sched:sched_switch,sched:sched_waking -- true 2>&1 >/dev/null)" \
        || grep -qiE 'not supported|permission|denied|invalid|unknown' <<<"$err"; then
        PERF_NOTE="perf tracepoints not available here (perf_event_paranoid=$(cat /proc/sys/kernel/perf_event_paranoid 2>/dev/null || echo '?'), tracefs $(ls /sys/kernel/tracing/events >/dev/null 2>&1 && echo present || echo missing)): no syscall/scheduler counts; $(head -1 <<<"$err")"
        return 0
    fi
    local sc
    for sc in "${PERF_SYSCALLS[@]}"; do
        if [[ -d /sys/kernel/tracing/events/syscalls/sys_enter_$sc || -d /sys/kernel/debug/tracing/events/syscalls/sys_enter_$sc ]]; then
            PERF_ARGS+=(-e "syscalls:sys_enter_$sc"); PERF_KEYS+=("sc_$sc")
        fi
    done
    PERF_ARGS+=(-e raw_syscalls:sys_enter); PERF_KEYS+=(sc_total)
    PERF_ARGS+=(-e raw_syscalls:sys_exit --filter 'ret == -11'); PERF_KEYS+=(eagain)
    PERF_ARGS+=(-e sched:sched_waking); PERF_KEYS+=(wakeups)
    PERF_ARGS+=(-e sched:sched_switch); PERF_KEYS+=(switches)
    PERF_ARGS+=(-e sched:sched_switch --filter 'prev_state == 0'); PERF_KEYS+=(preempted)
    PERF_NOTE="perf stat: ${#PERF_KEYS[@]} counters, ${BENCH_PERF_DURATION:-5} s counting run per proxy target and round"
}
setup_perf
log "$PERF_NOTE"

# all_pids PID... : the PIDs and their direct children (nginx workers), comma-separated, for perf -p.
all_pids() {
    local p c kids out=()
    for p in "$@"; do
        out+=("$p")
        if [[ -r "/proc/$p/task/$p/children" ]]; then
            kids=(); read -r -a kids <"/proc/$p/task/$p/children" || true
            for c in "${kids[@]}"; do out+=("$c"); done
        fi
    done
    local IFS=,
    echo "${out[*]}"
}

# perf_count TARGET ROUND CONNS THREADS : prints "perf_requests=N key=count ..." (nothing when perf is off).
perf_count() {
    local target="$1" round="$2" conns="$3" threads="$4" secs="${BENCH_PERF_DURATION:-5}" pids pf perf_pid out line
    ((${#PERF_KEYS[@]})) || return 0
    read -r -a pids <<<"$(target_pids "$target")"
    ((${#pids[@]})) || return 0
    pf="$RUN_DIR/perf/${target//:/-}-$round.csv"
    out="$RUN_DIR/perf/${target//:/-}-$round-wrk.txt"
    perf stat --per-thread -x, -o "$pf" "${PERF_ARGS[@]}" -p "$(all_pids "${pids[@]}")" >"$RUN_DIR/perf/perf.log" 2>&1 &
    perf_pid=$!
    STARTED_PIDS+=("$perf_pid")
    sleep 0.3
    wrk -t"$threads" -c"$conns" -d"${secs}s" --timeout 5s -s "$BENCH_DIR/post.lua" "$(target_url "$target")" >"$out" 2>&1 || true
    kill -INT "$perf_pid" 2>/dev/null || true
    wait "$perf_pid" 2>/dev/null || true
    forget_pid "$perf_pid"
    line="$(grep '^BENCH ' "$out")" || return 0
    line="${line#BENCH }"; line="${line%% *}"   # requests=N
    # perf's per-thread CSV: "comm-tid,value,unit,event,..." — one block per counter in the order given, one line per
    # thread in each block; "<not counted>" = 0. Totals per counter, and for the scheduler counters and sched_yield/futex
    # a breakdown by thread name ("thr_<key>=name:count|name:count", spaces in names as _).
    awk -F, -v keys="${PERF_KEYS[*]}" -v req="${line#requests=}" '
        /^#/ || NF < 4 { next }
        FNR == NR { if (!($1 in seen)) { seen[$1] = 1; threads++ } next }
        {
            e = int(i / threads) + 1; i++
            v = ($2 ~ /^[0-9]+$/) ? $2 : 0
            total[e] += v
            name = $1; sub(/-[0-9]+$/, "", name); gsub(/[ |:=]/, "_", name)
            if (v > 0) { by[e, name] += v; names[name] = 1 }
        }
        END {
            n = split(keys, k, " ")
            printf "perf_requests=%s", req
            for (e = 1; e <= n; e++) printf " %s=%d", k[e], total[e]
            for (e = 1; e <= n; e++) {
                if (k[e] !~ /^(wakeups|switches|preempted|sc_sched_yield|sc_futex|sc_total)$/) continue
                out = ""
                for (nm in names) if ((e, nm) in by) out = out (out == "" ? "" : "|") nm ":" by[e, nm]
                if (out != "") printf " thr_%s=%s", k[e], out
            }
            printf "\n"
        }' "$pf" "$pf"
}
mkdir -p "$RUN_DIR/perf"

# run_wrk PHASE TARGET ROUND CONNS THREADS SECONDS : one wrk run, one line in results.tsv.
run_wrk() {
    local phase="$1" target="$2" round="$3" conns="$4" threads="$5" secs="$6"
    local out pids c0 c1 u0 u1 g0 g1 gcs line other attempt=0 dest s0 s1 perfkv
    read -r -a pids <<<"$(target_pids "$target")"
    while true; do
        attempt=$((attempt + 1))
        out="$RUN_DIR/wrk/$phase-${target//:/-}-$round-$attempt.txt"
        c0=0; c1=0; s0="0 0"; s1="0 0"
        if ((${#pids[@]})); then c0="$(cpu_ticks "${pids[@]}")"; s0="$(cpu_ticks_split "${pids[@]}")"; fi
        u0="$(cpu_ticks "$MOCK_PID")"
        g0="$(gc_counts "$target")"
        load_begin
        wrk -t"$threads" -c"$conns" -d"${secs}s" --timeout 5s --latency -s "$BENCH_DIR/post.lua" "$(target_url "$target")" >"$out" 2>&1 \
            || { cat "$out" >&2; die "wrk failed for $target"; }
        other="$(load_end)"
        g1="$(gc_counts "$target")"
        if ((${#pids[@]})); then c1="$(cpu_ticks "${pids[@]}")"; s1="$(cpu_ticks_split "${pids[@]}")"; fi
        u1="$(cpu_ticks "$MOCK_PID")"
        for pid in "$MOCK_PID" "$NGINX_PID" "${PIDS_OF[@]}"; do
            kill -0 "$pid" 2>/dev/null || die "pid $pid died during the $target run (see logs under $RUN_DIR)"
        done
        line="$(grep '^BENCH ' "$out")" || { cat "$out" >&2; die "no summary line from wrk for $target"; }
        # The target's garbage collections during the run (LLMProxy targets, from their /metrics; 0 for the others).
        read -r -a gcs <<<"$g0 $g1"
        line="$line gc0=$((gcs[3] - gcs[0])) gc1=$((gcs[4] - gcs[1])) gc2=$((gcs[5] - gcs[2]))"
        read -r -a sp <<<"$s0 $s1"
        line="$line putime=$((sp[2] - sp[0])) pstime=$((sp[3] - sp[1]))"
        awk -v t="$target" -v ph="$phase" -v r="$round" -v o="$other" '{
            for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
            err = v["connect"] + v["read"] + v["write"] + v["status"] + v["timeout"]
            printf "  %-6s %-22s round %-6s %9.0f req/s  p50 %7.3f ms  p99 %7.3f ms  errors %d  other load %d%%\n", ph, t, r,
                v["requests"] / (v["duration_us"] / 1e6), v["p50_us"] / 1000, v["p99_us"] / 1000, err, o
        }' <<<"$line" >&2
        [[ "$round" == warmup ]] && return 0
        dest="$RESULTS_TSV"
        # A run disturbed by someone else's CPU use is repeated while the retry budget lasts (and kept apart).
        if ((other > MAX_OTHER && RETRY_LEFT >= secs)); then
            dest="$DISCARDED_TSV"
        fi
        if [[ "$dest" == "$RESULTS_TSV" && "$phase" != c1 ]]; then
            perfkv="$(perf_count "$target" "$round" "$conns" "$threads")"
            [[ -z "$perfkv" ]] || line="$line $perfkv"
        fi
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$phase" "$target" "$round" "$conns" "$((c1 - c0))" "$((u1 - u0))" "$other" "${line#BENCH }" >>"$dest"
        [[ "$dest" == "$RESULTS_TSV" ]] && return 0
        RETRY_LEFT=$((RETRY_LEFT - secs))
        log "  other load ${other}% > ${MAX_OTHER}%: repeating this run (retry budget left ${RETRY_LEFT}s)"
    done
}

# An LLMProxy target's GC counts "gen0 gen1 gen2" from its Prometheus endpoint; "0 0 0" for the others.
gc_counts() {
    [[ -n "${ADMIN_OF[$1]:-}" ]] || { echo "0 0 0"; return 0; }
    curl -s --max-time 2 "http://127.0.0.1:${ADMIN_OF[$1]}/metrics" \
        | awk '/^dotnet_collection_count_total\{generation="[012]"\}/ { split($1, a, "\""); n[a[2]] = $2 }
               END { printf "%d %d %d\n", n["0"], n["1"], n["2"] }'
}

# Order rotates every round so no target always runs first (or right after the hungriest one).
rotated() { local r="$1" i n=${#TARGETS[@]}; for ((i = 0; i < n; i++)); do echo "${TARGETS[$(((i + r) % n))]}"; done; }

log "warm-up: LLMProxy ${WARMUP}s each, nginx proxy 3s, direct 2s ($CONNS connections)"
for t in "${LLM_TARGETS[@]}"; do run_wrk "c$CONNS" "$t" warmup "$CONNS" "$THREADS" "$WARMUP"; done
run_wrk "c$CONNS" nginx warmup "$CONNS" "$THREADS" 3
run_wrk "c$CONNS" direct warmup "$CONNS" "$THREADS" 2

log "throughput: $ROUNDS rounds x ${#TARGETS[@]} targets x ${DURATION}s, $CONNS connections, $THREADS wrk threads"
for ((r = 1; r <= ROUNDS; r++)); do
    for t in $(rotated "$r"); do run_wrk "c$CONNS" "$t" "$r" "$CONNS" "$THREADS" "$DURATION"; done
done

log "idle latency: $ROUNDS rounds x ${#TARGETS[@]} targets x ${LAT_DURATION}s, 1 connection"
for t in "${LLM_TARGETS[@]}"; do run_wrk c1 "$t" warmup 1 1 2; done
for ((r = 1; r <= ROUNDS; r++)); do
    for t in $(rotated "$r"); do run_wrk c1 "$t" "$r" 1 1 "$LAT_DURATION"; done
done

# Access-log sanity: LLMProxy wrote one line per request, and they were all 200s.
ACCESS_LINES="$(grep -c ' POST /v1/chat/completions ' "$LLM_LOG" || true)"
ACCESS_OUTCOMES="$(grep ' POST /v1/chat/completions ' "$LLM_LOG" | grep -o ' POST /v1/chat/completions [0-9]* .*outcome=[a-z_0-9]*' \
    | awk '{ o = $NF; sub(/^outcome=/, "", o); n[$3 " " o]++ } END { for (k in n) { printf "%s%s x%d", sep, k, n[k]; sep = ", " } }' || true)"
WARNINGS="$(grep -Eic '(warn|fail|error|crit)' "$LLM_LOG" || true)"
NGINX_ACCESS="$(wc -l <"$NGINX_PREFIX/logs/access.log")"

REPORT="$RUN_DIR/report.md"
{
    echo "## Throughput and latency: LLMProxy vs nginx reverse proxy"
    echo
    machine_info
    echo "- CPU busy before start (other load): ${BUSY_BEFORE}%"
    echo "- config: BENCH_FEATURES=${BENCH_FEATURES:-all} ($([[ "${BENCH_FEATURES:-all}" == all ]] && echo "a client key (Bearer, with request and token limits and a model list), requests/tokens per minute and concurrency budgets, model lists and a model route on top of breaker, ratelimits, retry, metrics and the access log" || echo "breaker, ratelimits, retry, metrics and the access log"))"
    for t in "${LLM_TARGETS[@]:1}"; do
        if [[ -n "${DESC_OF[$t]:-}" ]]; then echo "- target \`${t#llmproxy:}\`: ${DESC_OF[$t]}"
        else echo "- variant \`${t#llmproxy:}\`: the same binary and config with \`${ENV_OF[$t]}\`"; fi
    done
    echo "- $PERF_NOTE"
    echo "- settings: ${ROUNDS} rounds; ${CONNS} connections x ${DURATION}s and 1 connection x ${LAT_DURATION}s per target and round; wrk -t${THREADS}; nginx worker_processes ${BENCH_NGINX_WORKERS:-auto} (both instances)"
    echo
    "$(python_bin)" "$BENCH_DIR/report.py" "$RESULTS_TSV" "$CLK_TCK" "$CONNS" "$DISCARDED_TSV"
    echo
    echo "Access logs (warm-up runs included): LLMProxy wrote $ACCESS_LINES request lines (status outcome: ${ACCESS_OUTCOMES:-none}) and $WARNINGS warning/error lines; nginx proxy wrote $NGINX_ACCESS lines."
} >"$REPORT"
echo
cat "$REPORT"
echo
log "done; report in ${REPORT#"$REPO_DIR"/}, raw wrk output in ${RUN_DIR#"$REPO_DIR"/}/wrk/"
