# shellcheck shell=bash
# Shared helpers for bench/run.sh and bench/stream.sh. Sourced, not run.
# Every process started here is recorded by PID and stopped by the EXIT trap; nothing else is touched.

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$BENCH_DIR/.." && pwd)"
OUT_DIR="$BENCH_DIR/out"
LLMPROXY_DLL="$OUT_DIR/llmproxy/llmproxy.dll"
CLK_TCK="$(getconf CLK_TCK)"

STARTED_PIDS=()          # processes this script started (stopped in reverse order on exit)
POLICY_RC_CREATED=""     # set while our temporary /usr/sbin/policy-rc.d exists

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n "$POLICY_RC_CREATED" ]]; then
        rm -f /usr/sbin/policy-rc.d
    fi
    local i pid
    for ((i = ${#STARTED_PIDS[@]} - 1; i >= 0; i--)); do
        pid="${STARTED_PIDS[i]}"
        kill -TERM "$pid" 2>/dev/null || true
    done
    # Up to 5 s for a graceful stop, then SIGKILL whatever of ours is left.
    local deadline=$((SECONDS + 5))
    for pid in "${STARTED_PIDS[@]}"; do
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            log "pid $pid did not stop on SIGTERM; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
    exit "$rc"
}

install_traps() {
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# Installs the Debian packages that are missing (non-interactive). A temporary policy-rc.d keeps the
# nginx package from starting a system nginx on port 80; it is removed again right after (or on exit).
# Arguments: more commands a script needs, each from the package of the same name (stream.sh: gcc).
ensure_packages() {
    local missing=() extra
    for extra in "$@"; do
        command -v "$extra" >/dev/null 2>&1 || missing+=("$extra")
    done
    command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || missing+=(nginx-light)
    command -v wrk >/dev/null 2>&1 || missing+=(wrk)
    command -v curl >/dev/null 2>&1 || missing+=(curl)
    [[ -x /usr/bin/python3 ]] || command -v python3 >/dev/null 2>&1 || missing+=(python3)
    if ((${#missing[@]} == 0)); then
        return 0
    fi
    [[ "$(id -u)" == 0 ]] || die "missing ${missing[*]}: run as root so apt-get can install them, or install them yourself"
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get to install them with"
    log "installing ${missing[*]} with apt-get"
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        POLICY_RC_CREATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$OUT_DIR/apt.log" 2>&1 \
        || die "apt-get update failed (see $OUT_DIR/apt.log)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}" >>"$OUT_DIR/apt.log" 2>&1 \
        || die "apt-get install ${missing[*]} failed (see $OUT_DIR/apt.log)"
    if [[ -n "$POLICY_RC_CREATED" ]]; then
        rm -f /usr/sbin/policy-rc.d
        POLICY_RC_CREATED=""
    fi
}

nginx_bin() { command -v nginx 2>/dev/null || echo /usr/sbin/nginx; }

python_bin() { if [[ -x /usr/bin/python3 ]]; then echo /usr/bin/python3; else command -v python3; fi; }

# True when something listens on 127.0.0.1/0.0.0.0/:: at TCP port $1 (reads /proc, needs no tools).
port_in_use() {
    local hex
    hex="$(printf '%04X' "$1")"
    awk -v p=":$hex" 'NR > 1 && $4 == "0A" && substr($2, length($2) - 4) == p { found = 1 } END { exit !found }' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# wait_port PORT PID : until something listens on 127.0.0.1:PORT (at most 10 s); fails early if PID died.
wait_port() {
    local deadline=$((SECONDS + 10))
    until port_in_use "$1"; do
        kill -0 "$2" 2>/dev/null || die "pid $2 exited before it listened on port $1"
        ((SECONDS < deadline)) || die "nothing listens on port $1 after 10 s"
        sleep 0.05
    done
}

check_ports_free() {
    local p busy=()
    for p in "$@"; do
        if port_in_use "$p"; then busy+=("$p"); fi
    done
    ((${#busy[@]} == 0)) || die "port(s) ${busy[*]} already in use on this machine; set BENCH_PORT_BASE to another free range"
}

# start_bg NAME LOGFILE CMD... : runs CMD in the background, records its PID in STARTED_PIDS and in $LAST_PID.
start_bg() {
    local name="$1" logfile="$2"
    shift 2
    "$@" >"$logfile" 2>&1 &
    LAST_PID=$!
    STARTED_PIDS+=("$LAST_PID")
    log "started $name (pid $LAST_PID), output in ${logfile#"$REPO_DIR"/}"
}

# wait_http NAME PID URL [METHOD] [TIMEOUT_S] [HEADER]: polls until URL answers 2xx; fails early if PID died.
wait_http() {
    local name="$1" pid="$2" url="$3" method="${4:-GET}" timeout="${5:-30}" header="${6:-X-Bench: 1}" code
    local deadline=$((SECONDS + timeout))
    while ((SECONDS < deadline)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            die "$name (pid $pid) exited before it was ready"
        fi
        code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 -X "$method" -H "$header" "$url" 2>/dev/null || true)"
        if [[ "$code" == 2?? ]]; then
            return 0
        fi
        sleep 0.2
    done
    die "$name not ready at $url after ${timeout}s (last status: ${code:-none})"
}

# Sum of utime+stime (clock ticks) of the given PIDs and, for each, its direct children (nginx workers).
cpu_ticks() {
    local user sys
    read -r user sys < <(cpu_ticks_split "$@")
    echo $((user + sys))
}

# "user system" clock ticks of the given PIDs and, for each, its direct children (nginx workers).
cpu_ticks_split() {
    local pids=("$@") all=() p c kids
    for p in "${pids[@]}"; do
        all+=("$p")
        if [[ -r "/proc/$p/task/$p/children" ]]; then
            kids=(); read -r -a kids <"/proc/$p/task/$p/children" || true
            for c in "${kids[@]}"; do all+=("$c"); done
        fi
    done
    local user=0 sys=0 stat rest
    for p in "${all[@]}"; do
        stat="$(cat "/proc/$p/stat" 2>/dev/null)" || continue
        rest="${stat##*) }"
        # shellcheck disable=SC2086
        set -- $rest
        user=$((user + ${12})); sys=$((sys + ${13}))
    done
    echo "$user $sys"
}

# forget_pid PID : a process we started and already waited for; the exit trap must not signal its (reusable) PID.
forget_pid() {
    local i
    for i in "${!STARTED_PIDS[@]}"; do
        [[ "${STARTED_PIDS[i]}" != "$1" ]] || unset 'STARTED_PIDS[i]'
    done
    STARTED_PIDS=("${STARTED_PIDS[@]}")
}

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

build_llmproxy() {
    command -v dotnet >/dev/null 2>&1 || die "dotnet SDK not found on PATH (needed to build LLMProxy)"
    if [[ "${BENCH_SKIP_BUILD:-0}" == 1 && -f "$LLMPROXY_DLL" ]]; then
        log "BENCH_SKIP_BUILD=1: reusing $LLMPROXY_DLL"
        return 0
    fi
    log "building LLMProxy (dotnet publish -c Release)"
    (cd "$REPO_DIR" && dotnet publish src/LLMProxy -c Release -o "$OUT_DIR/llmproxy" --nologo -v quiet) \
        >"$OUT_DIR/build.log" 2>&1 || { tail -30 "$OUT_DIR/build.log" >&2; die "dotnet publish failed (see $OUT_DIR/build.log)"; }
}

machine_info() {
    local model
    model="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- machine: nproc=$(nproc), CPU: ${model:-unknown}, RAM: $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo), kernel $(uname -r)"
    echo "- source: commit $(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo '?') (last commit touching src/: $(git -C "$REPO_DIR" log -1 --format=%h -- src 2>/dev/null || echo '?'))$(git -C "$REPO_DIR" diff --quiet HEAD -- src 2>/dev/null || echo ', src/ has uncommitted changes')"
    echo "- tools: $("$(nginx_bin)" -v 2>&1 | sed 's/^nginx version: //'), $(wrk -v 2>&1 | head -1 | awk '{print $1, $2}'), dotnet $(dotnet --version 2>/dev/null), $("$(python_bin)" --version 2>&1)"
}

# The fixed ~300-byte chat.completion answer of the nginx mock upstream.
MOCK_ANSWER='{"id":"chatcmpl-bench0001","object":"chat.completion","created":1732000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! This is the fixed benchmark answer."},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":245,"completion_tokens":9,"total_tokens":254}}'

nginx_common_head() { # PREFIX
    local p="$1"
    cat <<CONF
# generated by bench/ — do not edit
user root;
worker_processes ${BENCH_NGINX_WORKERS:-auto};
pid $p/nginx.pid;
error_log $p/logs/error.log warn;
worker_rlimit_nofile 20000;
events { worker_connections 8192; multi_accept on; }
CONF
}

nginx_temp_paths() { # PREFIX
    local p="$1"
    cat <<CONF
    client_body_temp_path $p/tmp/body;
    proxy_temp_path $p/tmp/proxy;
    fastcgi_temp_path $p/tmp/fastcgi;
    uwsgi_temp_path $p/tmp/uwsgi;
    scgi_temp_path $p/tmp/scgi;
CONF
}

# write_nginx_mock PREFIX PORT... : the mock upstream, one server block per port.
write_nginx_mock() {
    local p="$1" port
    shift
    mkdir -p "$p/logs" "$p/tmp" "$p/html"
    {
        nginx_common_head "$p"
        echo "http {"
        nginx_temp_paths "$p"
        cat <<CONF
    access_log off;
    keepalive_timeout 65s;
    keepalive_requests 1000000;
    client_body_buffer_size 16k;
    sendfile on;
    tcp_nopush on;
CONF
        for port in "$@"; do
            cat <<CONF
    server {
        listen 127.0.0.1:$port backlog=4096;
        location = /v1/chat/completions {
            default_type application/json;
            return 200 '$MOCK_ANSWER';
        }
        location = /v1/big {
            default_type application/octet-stream;
            alias $p/html/big.bin;
        }
        location / { return 404; }
    }
CONF
        done
        echo "}"
    } >"$p/nginx.conf"
}

# write_nginx_proxy [--stream] PREFIX LISTEN_PORT UPSTREAM_PORT... : nginx as the reference reverse proxy; with --stream
# it passes each piece of an answer on as it arrives (proxy_buffering off), as an SSE proxy must.
write_nginx_proxy() {
    local buffering=""
    if [[ "$1" == --stream ]]; then
        buffering="proxy_buffering off;"
        shift
    fi
    local p="$1" listen="$2" port
    shift 2
    mkdir -p "$p/logs" "$p/tmp"
    {
        nginx_common_head "$p"
        echo "http {"
        nginx_temp_paths "$p"
        echo "    upstream llm {"
        for port in "$@"; do echo "        server 127.0.0.1:$port;"; done
        cat <<CONF
        keepalive 64;
        keepalive_requests 1000000;
    }
    # Access log on (one unbuffered line per request), like LLMProxy's access log to stdout.
    access_log $p/logs/access.log combined;
    keepalive_timeout 65s;
    keepalive_requests 1000000;
    client_body_buffer_size 16k;
    server {
        listen 127.0.0.1:$listen backlog=4096;
        location / {
            proxy_pass http://llm;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            $buffering
        }
    }
}
CONF
    } >"$p/nginx.conf"
}

# start_nginx NAME PREFIX : nginx in the foreground of a background job (the PID is the master).
start_nginx() {
    local name="$1" p="$2"
    "$(nginx_bin)" -t -q -p "$p" -e "$p/logs/error.log" -c "$p/nginx.conf" >"$p/logs/test.log" 2>&1 \
        || { cat "$p/logs/test.log" >&2; die "$name: nginx rejected $p/nginx.conf"; }
    start_bg "$name" "$p/logs/stdout.log" "$(nginx_bin)" -p "$p" -e "$p/logs/error.log" -c "$p/nginx.conf" -g 'daemon off;'
}

# Busy (non-idle, non-iowait) clock ticks of the whole machine, from /proc/stat.
machine_busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }

# CPU ticks of this shell's finished (waited-for) children: utime+stime of wrk or a Python client after it ran.
child_ticks() {
    local stat rest
    stat="$(</proc/$$/stat)"
    rest="${stat##*) }"
    # shellcheck disable=SC2086
    set -- $rest
    echo $((${14} + ${15}))   # cutime = field 16, cstime = field 17
}

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# "Other load": CPU used on this machine during a measurement by processes that are not ours, in % of all
# cores. ours = the processes we started + finished children (the load generator). Call load_begin, measure,
# then load_end prints the percentage.
load_begin() {
    LOAD_T0="$(now_ms)"
    LOAD_M0="$(machine_busy_ticks)"
    LOAD_O0="$(cpu_ticks "${STARTED_PIDS[@]}")"
    LOAD_C0="$(child_ticks)"
}
load_end() {
    local t1 m1 o1 c1 foreign cap
    t1="$(now_ms)"; m1="$(machine_busy_ticks)"; o1="$(cpu_ticks "${STARTED_PIDS[@]}")"; c1="$(child_ticks)"
    foreign=$(((m1 - LOAD_M0) - (o1 - LOAD_O0) - (c1 - LOAD_C0)))
    ((foreign > 0)) || foreign=0
    cap=$(((t1 - LOAD_T0) * $(nproc) * CLK_TCK / 1000))
    echo $((cap > 0 ? 100 * foreign / cap : 0))
}

# CPU busy % of the whole machine over one second.
busy_pct() {
    local a1 a2 a3 a4 a5 a6 a7 b1 b2 b3 b4 b5 b6 b7 busy total
    read -r _ a1 a2 a3 a4 a5 a6 a7 _ </proc/stat
    sleep 1
    read -r _ b1 b2 b3 b4 b5 b6 b7 _ </proc/stat
    busy=$(((b1 - a1) + (b2 - a2) + (b3 - a3) + (b6 - a6) + (b7 - a7)))
    total=$((busy + (b4 - a4) + (b5 - a5)))
    echo $((total > 0 ? 100 * busy / total : 0))
}

# Prints the machine's busy % before the benchmark. Someone else using the CPUs is only a warning (ratios
# stay comparable, absolutes do not); BENCH_WAIT_QUIET=N waits up to N seconds for 5 quiet seconds in a row
# (each under 15 % busy).
wait_quiet() {
    local busy quiet=0 deadline=$((SECONDS + ${BENCH_WAIT_QUIET:-0}))
    busy="$(busy_pct)"
    while ((SECONDS < deadline)); do
        if ((busy <= 15)); then quiet=$((quiet + 1)); else quiet=0; fi
        ((quiet >= 5)) && break
        ((quiet == 0)) && log "machine ${busy}% busy; waiting for 5 quiet seconds (BENCH_WAIT_QUIET)"
        busy="$(busy_pct)"
    done
    if ((busy > 15)); then
        log "warning: the machine is ${busy}% busy before the benchmark starts; absolute numbers will be lower and noisier"
    fi
    echo "$busy"
}

# The client key bench/post.lua sends as "Authorization: Bearer ..." (the bench config asks for it).
BENCH_CLIENT_KEY="sk-bench-0000000000000000000000000000000000000000"

# write_llm_config FILE PORT ADMIN_PORT MOCK_PORT... : a realistic config with every feature on (BENCH_FEATURES=basic: the config of
# earlier runs, without budgets, model rules and routes).
write_llm_config() {
    local file="$1" port="$2" admin="$3" i=0 p
    shift 3
    {
        cat <<YAML
# generated by bench/: 3 upstreams, roundrobin, breaker, ratelimits, retry$([[ "${BENCH_FEATURES:-all}" == all ]] && echo ", a client key with limits, budgets, model rules, a model route")
httpServer:
    forwards:
        - name: bench
          port: $port
          address: "127.0.0.1"
          defaultGroup: llm
          ratelimit:
              perSecond: 1000000
              burst: 1000000
YAML
        if [[ "${BENCH_FEATURES:-all}" == all ]]; then
            # The client key is the one bench/post.lua sends (wrk); its limits are far above any load here.
            cat <<YAML
          keys:
              - name: bench
                key: "$BENCH_CLIENT_KEY"
                ratelimit: { perSecond: 1000000, burst: 1000000 }
                tokensPerMinute: 1000000000000
                models: ["gpt-4o*", "o1*"]
          routes:
              - name: gpt
                model: "gpt-4o*"
                group: llm
YAML
        fi
        cat <<YAML
    admin:
        port: $admin
        address: "127.0.0.1"
    shutdownTimeout: 2000
upstreams:
YAML
        for p in "$@"; do
            i=$((i + 1))
            cat <<YAML
    - name: mock$i
      url: "http://127.0.0.1:$p"
      auth:
          type: bearer
          token: "sk-upstream-$i"
      breaker:
          threshold: 0.5
          cooldown: 30000
          maxRequests: 3
          interval: 10000
          minRequests: 10
      ratelimit:
          perSecond: 10000000
          burst: 10000000
YAML
            if [[ "${BENCH_FEATURES:-all}" == all ]]; then
                cat <<YAML
          requestsPerMinute: 600000000
          tokensPerMinute: 100000000000
          maxConcurrent: 10000
      models: ["gpt-4o*", "o1*"]
YAML
            fi
        done
        cat <<YAML
upstreamGroups:
    - name: llm
      upstreams:
YAML
        for ((p = 1; p <= i; p++)); do echo "          - name: mock$p"; done
        cat <<YAML
      balance:
          strategy: roundrobin
      httpClient:
          connect:
              maxPerHost: 100
      retry:
          attempts: 3
          statusCodes: [429, 500, 502, 503, 504]
YAML
    } >"$file"
}
