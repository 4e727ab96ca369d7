// sse_lag: per-chunk SSE lag through a proxy vs direct, for bench/stream.sh (issue 13, point 4).
//
// One process, one thread, one epoll loop, no allocation while measuring. It is both ends of every stream:
//   - the upstream: an SSE server on 127.0.0.1:--listen that answers each POST like LLMProxy's built-in mock
//     (role chunk at once, --chunks content chunks every --interval-ms, then stop chunk [+ usage chunk when the
//     request set stream_options.include_usage] + [DONE]), one write per chunk, and notes on CLOCK_MONOTONIC the
//     moment it hands each chunk to send();
//   - the client: per round, N streams through each proxy (--proxy P[,P2...], each with --listen as its upstream;
//     --names gives them names, default "proxy", "proxy2", ...) and N straight to --listen ("direct"), and with
//     --floor 1 N more straight ("floor": direct group B), interleaved and started staggered over one chunk
//     interval; it notes the moment each chunk's last byte came out of recv().
// lag of a chunk = client receive time − upstream send time. Each stream names itself in the request body
// ("user":"bench-<id>", forwarded untouched) and its chunks carry the id ("chatcmpl-mock-<id>"), so both ends
// agree on which chunk is which. The two direct groups show what the instrument itself can resolve.
//
// Split mode (what bench/stream.sh runs): `--role upstream` is only the upstream (until SIGTERM; then it writes
// "U <id> <k> <send_ns>" per chunk to --out) and `--role client` only the client (its C lines carry send_ns 0;
// bench/sse_bench.py lagreport --upstream-records fills them in). Then the direct client is woken by another
// process's send, as a real client is; in one process (`--role both`, the default) the direct path is a send and
// a recv on the same thread with no wake-up at all, so the proxied path would be charged the client's wake-up.
//
// Output (--out FILE), one line each, for bench/sse_bench.py lagreport:
//   S <round> <group> <id> <ok 0|1> <chunks> <request_sent_ns> <error or ->     group: direct|floor|a proxy's name
//   C <id> <k> <send_ns> <recv_ns>
// Rounds below 1 are warm-up rounds. Build: gcc -O2 -Wall -Wextra -o sse_lag sse_lag.c
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RBUF 65536
#define WBUF 65536
#define MARK "\"id\":\"chatcmpl-mock-"
#define MAXPROXIES 8

static const char *group_name[MAXPROXIES + 2]; // direct, the proxies by name, floor

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("sse_lag: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

enum kind { K_LISTEN, K_SERVER, K_CLIENT };

struct conn {
    enum kind kind;
    int fd;
    int64_t due;   // next timed action (server: next chunk; client: start), 0 = none
    int heap_at;   // position in the timer heap, -1 = not in it
    char *rbuf;
    size_t rlen;
    char *wbuf;    // bytes send() did not take yet
    size_t wlen;
    int want_out;
    // server side
    int sid;       // stream being answered, -1 = waiting for a request
    int next_k;    // next chunk to send
    int usage;     // the request asked for the usage chunk
    int64_t t0;    // when the request was complete
    // client side
    int cid;       // stream id
    int state;     // 0 waiting to start, 1 connecting, 2 reading, 3 done
    int k;         // chunks received
    size_t scan;   // parse position in rbuf
    int saw_done;
    int got_status;
};

// --- options and results --------------------------------------------------------------------------------------

static int opt_listen, opt_proxy[MAXPROXIES], n_proxies, opt_streams = 50, opt_rounds = 5, opt_warmup = 2, opt_chunks = 20, opt_interval_ms = 50,
           opt_floor = 1;
static const char *opt_out;
static int groups, per_round, total_streams, events_per_stream;
static int64_t *sent_at, *recv_at; // [id * events_per_stream + k]
struct stream_info { int round, group, ok, chunks; int64_t req_ns; char err[96]; };
static struct stream_info *info;
static int ep;
enum role { ROLE_BOTH, ROLE_UPSTREAM, ROLE_CLIENT };
static enum role opt_role = ROLE_BOTH;
static volatile sig_atomic_t stop_requested;
struct sent_rec { int id, k; int64_t t; };
static struct sent_rec *sent_log; // --role upstream: every chunk sent, in order
static size_t sent_n, sent_cap;
static int round_open; // streams of the current round not finished yet
static struct conn **round_clients; // [per_round], NULL once finished

// --- timer heap (min on due) -----------------------------------------------------------------------------------

static struct conn **heap;
static int heap_n, heap_cap;

static void heap_swap(int a, int b) {
    struct conn *t = heap[a];
    heap[a] = heap[b];
    heap[b] = t;
    heap[a]->heap_at = a;
    heap[b]->heap_at = b;
}
static void heap_up(int i) {
    while (i > 0 && heap[(i - 1) / 2]->due > heap[i]->due) { heap_swap(i, (i - 1) / 2); i = (i - 1) / 2; }
}
static void heap_down(int i) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < heap_n && heap[l]->due < heap[m]->due) m = l;
        if (r < heap_n && heap[r]->due < heap[m]->due) m = r;
        if (m == i) return;
        heap_swap(i, m);
        i = m;
    }
}
static void heap_remove(struct conn *c) {
    int i = c->heap_at;
    if (i < 0) return;
    c->heap_at = -1;
    heap_n--;
    if (i != heap_n) {
        heap[i] = heap[heap_n];
        heap[i]->heap_at = i;
        heap_up(i);
        heap_down(heap[i]->heap_at);
    }
}
static void schedule(struct conn *c, int64_t due) {
    heap_remove(c);
    c->due = due;
    if (heap_n == heap_cap) {
        heap_cap = heap_cap ? 2 * heap_cap : 1024;
        heap = realloc(heap, sizeof *heap * heap_cap);
        if (!heap) die("out of memory");
    }
    heap[heap_n] = c;
    c->heap_at = heap_n++;
    heap_up(c->heap_at);
}

// --- sockets ----------------------------------------------------------------------------------------------------

static struct conn *conn_new(enum kind kind, int fd) {
    struct conn *c = calloc(1, sizeof *c);
    if (!c) die("out of memory");
    c->kind = kind;
    c->fd = fd;
    c->heap_at = -1;
    c->sid = -1;
    if (kind != K_LISTEN) {
        c->rbuf = malloc(RBUF);
        c->wbuf = malloc(WBUF);
        if (!c->rbuf || !c->wbuf) die("out of memory");
    }
    return c;
}

static void watch(struct conn *c, int op, uint32_t events) {
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(ep, op, c->fd, &ev) < 0) die("epoll_ctl: %s", strerror(errno));
}

static void conn_free(struct conn *c) {
    heap_remove(c);
    if (c->fd >= 0) close(c->fd); // also leaves the epoll set
    free(c->rbuf);
    free(c->wbuf);
    free(c);
}

static void nodelay(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

// Sends what it can now and keeps the rest for EPOLLOUT; returns -1 when the connection failed.
static int send_bytes(struct conn *c, const char *p, size_t n) {
    if (c->wlen == 0) {
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN) return -1;
        if (w < 0) w = 0;
        p += w;
        n -= (size_t)w;
    }
    if (n == 0) return 0;
    if (c->wlen + n > WBUF) return -1;
    memcpy(c->wbuf + c->wlen, p, n);
    c->wlen += n;
    if (!c->want_out) {
        c->want_out = 1;
        watch(c, EPOLL_CTL_MOD, EPOLLIN | EPOLLOUT);
    }
    return 0;
}

static int flush_out(struct conn *c) {
    if (c->wlen) {
        ssize_t w = send(c->fd, c->wbuf, c->wlen, MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN) return -1;
        if (w > 0) {
            memmove(c->wbuf, c->wbuf + w, c->wlen - (size_t)w);
            c->wlen -= (size_t)w;
        }
    }
    if (c->wlen == 0 && c->want_out) {
        c->want_out = 0;
        watch(c, EPOLL_CTL_MOD, EPOLLIN);
    }
    return 0;
}

// --- upstream (server) side -------------------------------------------------------------------------------------

#define CREATED "1732000000"
#define CHUNK_HEAD "data: {\"id\":\"chatcmpl-mock-%d\",\"object\":\"chat.completion.chunk\",\"created\":" CREATED \
                   ",\"model\":\"gpt-4o-mini\""
static const char *WORDS[] = {"This", "is", "a", "streamed", "answer", "from", "the", "LLMProxy", "mock", "upstream."};

// Appends one HTTP/1.1 chunk (size line, payload, CRLF) framing the SSE event(s) in ev[0..n).
static size_t frame(char *dst, const char *ev, size_t n) {
    int h = sprintf(dst, "%zx\r\n", n);
    memcpy(dst + h, ev, n);
    memcpy(dst + h + n, "\r\n", 2);
    return (size_t)h + n + 2;
}

// Sends chunk k of stream c->sid (k = 0 role, 1..chunks content, chunks+1 stop [+ usage] + [DONE] + end).
static int send_chunk(struct conn *c) {
    char ev[1024], out[1400];
    size_t len = 0, n;
    int k = c->next_k, sid = c->sid;
    if (k == 0) {
        len = (size_t)sprintf(out, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                                   "Transfer-Encoding: chunked\r\n\r\n");
        n = (size_t)sprintf(ev, CHUNK_HEAD ",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"
                                           "\"logprobs\":null,\"finish_reason\":null}]}\n\n", sid);
        len += frame(out + len, ev, n);
    } else if (k <= opt_chunks) {
        n = (size_t)sprintf(ev, CHUNK_HEAD ",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"%s%s\"},"
                                           "\"logprobs\":null,\"finish_reason\":null}]}\n\n",
                            sid, k == 1 ? "" : " ", WORDS[(k - 1) % 10]);
        len = frame(out, ev, n);
    } else {
        n = (size_t)sprintf(ev, CHUNK_HEAD ",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,"
                                           "\"finish_reason\":\"stop\"}]}\n\n", sid);
        if (c->usage)
            n += (size_t)sprintf(ev + n, CHUNK_HEAD ",\"choices\":[],\"usage\":{\"prompt_tokens\":40,"
                                                   "\"completion_tokens\":%d,\"total_tokens\":%d}}\n\n",
                                 sid, opt_chunks, 40 + opt_chunks);
        n += (size_t)sprintf(ev + n, "data: [DONE]\n\n");
        len = frame(out, ev, n);
        memcpy(out + len, "0\r\n\r\n", 5);
        len += 5;
    }
    if (opt_role == ROLE_UPSTREAM) {
        if (sent_n == sent_cap) {
            sent_cap = sent_cap ? 2 * sent_cap : 1 << 16;
            sent_log = realloc(sent_log, sizeof *sent_log * sent_cap);
            if (!sent_log) die("out of memory");
        }
        sent_log[sent_n++] = (struct sent_rec){sid, k, now_ns()};
    } else if (sid >= 0 && sid < total_streams) {
        sent_at[(size_t)sid * events_per_stream + k] = now_ns();
    }
    if (send_bytes(c, out, len) < 0) return -1;
    c->next_k++;
    if (k <= opt_chunks) {
        // The mock sends the stop chunk right after the last content chunk.
        schedule(c, k < opt_chunks ? c->t0 + (int64_t)(k + 1) * opt_interval_ms * 1000000 : now_ns());
    } else {
        heap_remove(c);
        c->sid = -1; // ready for the next request on this (kept-alive) connection
    }
    return 0;
}

static const char *find(const char *h, size_t hn, const char *needle) { return memmem(h, hn, needle, strlen(needle)); }

// A complete request in rbuf? Starts answering it; returns -1 on a request it cannot answer.
static int server_try_request(struct conn *c) {
    const char *end = find(c->rbuf, c->rlen, "\r\n\r\n");
    if (!end) return c->rlen >= RBUF ? -1 : 0;
    size_t head = (size_t)(end - c->rbuf) + 4, body_len = 0, total;
    const char *body = c->rbuf + head;
    int chunked = 0;
    for (const char *p = c->rbuf; p && p < end;) {
        const char *eol = find(p, (size_t)(end - p) + 2, "\r\n");
        if (!eol) break;
        if (strncasecmp(p, "content-length:", 15) == 0) body_len = strtoul(p + 15, NULL, 10);
        if (strncasecmp(p, "transfer-encoding:", 18) == 0 && find(p, (size_t)(eol - p), "chunked")) chunked = 1;
        p = eol + 2;
    }
    if (chunked) {
        const char *last = find(body, c->rlen - head, "\r\n0\r\n\r\n");
        if (!last) return c->rlen >= RBUF ? -1 : 0;
        body_len = (size_t)(last - body) + 7;
    }
    total = head + body_len;
    if (total > RBUF) return -1;
    if (c->rlen < total) return 0;
    const char *u = find(body, body_len, "\"user\":\"bench-");
    c->sid = u ? atoi(u + 14) : -1;
    c->usage = find(body, body_len, "\"include_usage\":true") != NULL;
    memmove(c->rbuf, c->rbuf + total, c->rlen - total);
    c->rlen -= total;
    if (c->sid < 0 || c->sid >= total_streams) {
        static const char bad[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
        c->sid = -1;
        return send_bytes(c, bad, sizeof bad - 1);
    }
    c->t0 = now_ns();
    c->next_k = 0;
    return send_chunk(c);
}

static void server_readable(struct conn *c) {
    ssize_t r = recv(c->fd, c->rbuf + c->rlen, RBUF - c->rlen, 0);
    if (r == 0 || (r < 0 && errno != EAGAIN)) { conn_free(c); return; }
    if (r < 0) return;
    c->rlen += (size_t)r;
    if (c->sid < 0 && server_try_request(c) < 0) conn_free(c);
}

// --- client side -------------------------------------------------------------------------------------------------

static void client_finish(struct conn *c, const char *err) {
    struct stream_info *s = &info[c->cid];
    if (c->state == 3) return;
    c->state = 3;
    s->chunks = c->k;
    s->ok = err == NULL && c->k == events_per_stream;
    if (err) snprintf(s->err, sizeof s->err, "%s", err);
    else if (!s->ok) snprintf(s->err, sizeof s->err, "%d chunks, expected %d", c->k, events_per_stream);
    round_open--;
    round_clients[c->cid % per_round] = NULL;
    conn_free(c);
}

// Group 0 is direct, 1..n_proxies go through proxy 1..n, the last (with --floor) is direct again.
static int target_port(int group) { return group >= 1 && group <= n_proxies ? opt_proxy[group - 1] : opt_listen; }

static void client_start(struct conn *c) {
    struct stream_info *s = &info[c->cid];
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) { client_finish(c, "socket() failed"); return; }
    nodelay(fd);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    a.sin_port = htons((uint16_t)target_port(s->group));
    c->fd = fd;
    heap_remove(c);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0 && errno != EINPROGRESS) {
        client_finish(c, "connect failed");
        return;
    }
    c->state = 1;
    watch(c, EPOLL_CTL_ADD, EPOLLOUT);
}

static void client_connected(struct conn *c) {
    int err = 0;
    socklen_t l = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
    if (err) { client_finish(c, "connect refused"); return; }
    char body[256], req[768];
    int port = target_port(info[c->cid].group);
    int bn = snprintf(body, sizeof body, "{\"model\":\"gpt-4o-mini\",\"stream\":true,\"user\":\"bench-%d\",\"messages\":"
                                         "[{\"role\":\"user\",\"content\":\"Write a short poem about proxies.\"}]}", c->cid);
    int n = snprintf(req, sizeof req, "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
                                      "Accept: text/event-stream\r\nAuthorization: Bearer sk-bench\r\nContent-Length: %d\r\n\r\n%s",
                     port, bn, body);
    c->state = 2;
    watch(c, EPOLL_CTL_MOD, EPOLLIN);
    info[c->cid].req_ns = now_ns();
    if (send_bytes(c, req, (size_t)n) < 0) client_finish(c, "send failed");
}

// Every event that carries the stream's id and is complete (its blank line arrived) counts as received at t.
static void client_parse(struct conn *c, int64_t t) {
    char *b = c->rbuf;
    if (!c->got_status) {
        if (c->rlen < 12) return;
        c->got_status = 1;
        if (memcmp(b, "HTTP/1.1 200", 12) != 0) {
            char err[64];
            snprintf(err, sizeof err, "status line %.12s", b);
            client_finish(c, err);
            return;
        }
    }
    for (;;) {
        const char *m = find(b + c->scan, c->rlen - c->scan, MARK);
        if (!m) break;
        const char *blank = find(m, c->rlen - (size_t)(m - b), "\n\n");
        if (!blank) break; // wait for the rest of the event
        int id = atoi(m + strlen(MARK));
        if (id != c->cid) { client_finish(c, "a chunk of another stream"); return; }
        if (c->k < events_per_stream) recv_at[(size_t)c->cid * events_per_stream + c->k] = t;
        c->k++;
        c->scan = (size_t)(blank - b) + 2;
    }
    if (!c->saw_done && find(b + c->scan, c->rlen - c->scan, "data: [DONE]")) c->saw_done = 1;
    if (c->saw_done && find(b + c->scan, c->rlen - c->scan, "\r\n0\r\n\r\n")) { client_finish(c, NULL); return; }
    // Drop what is parsed; of the rest keep only what may still hold an unfinished marker, [DONE] or end.
    size_t keep_from = c->scan;
    if (!find(b + c->scan, c->rlen - c->scan, MARK) && c->rlen - c->scan > 64) keep_from = c->rlen - 64;
    if (keep_from > 0) {
        memmove(b, b + keep_from, c->rlen - keep_from);
        c->rlen -= keep_from;
        c->scan = c->scan > keep_from ? c->scan - keep_from : 0;
    }
    if (c->rlen >= RBUF - 1024) client_finish(c, "response not understood");
}

static void client_readable(struct conn *c) {
    ssize_t r = recv(c->fd, c->rbuf + c->rlen, RBUF - c->rlen, 0);
    int64_t t = now_ns();
    if (r == 0) { client_finish(c, c->saw_done ? "closed before the terminating chunk" : "closed before [DONE]"); return; }
    if (r < 0) {
        if (errno != EAGAIN) client_finish(c, "recv failed");
        return;
    }
    c->rlen += (size_t)r;
    client_parse(c, t);
}

// --- main loop -----------------------------------------------------------------------------------------------------

static void on_due(struct conn *c) {
    if (c->kind == K_SERVER) {
        if (send_chunk(c) < 0) conn_free(c);
    } else if (c->kind == K_CLIENT && c->state == 0) {
        client_start(c);
    } else {
        heap_remove(c);
    }
}

static void on_event(struct conn *c, uint32_t ev) {
    if (c->kind == K_LISTEN) {
        for (;;) {
            int fd = accept4(c->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd < 0) return;
            nodelay(fd);
            struct conn *s = conn_new(K_SERVER, fd);
            watch(s, EPOLL_CTL_ADD, EPOLLIN);
        }
    }
    if (c->kind == K_SERVER) {
        if ((ev & EPOLLOUT) && flush_out(c) < 0) { conn_free(c); return; }
        if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) server_readable(c);
        return;
    }
    // client
    if (c->state == 1) {
        if (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)) client_connected(c);
        return;
    }
    if ((ev & EPOLLOUT) && flush_out(c) < 0) { client_finish(c, "send failed"); return; }
    if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) client_readable(c);
}

// Runs the loop until `until` or (stop_when_round_done and every stream of the round finished).
static void run_loop(int64_t until, int stop_when_round_done) {
    struct epoll_event evs[256];
    for (;;) {
        int64_t now = now_ns();
        // At most a few due sends, then the receives: a loop behind schedule must not starve its own reads (a
        // late send is noted when it happens, a late read would count as lag).
        for (int batch = 0; batch < 16 && heap_n > 0 && heap[0]->due <= now; batch++) {
            on_due(heap[0]);
            now = now_ns();
        }
        if (now >= until || stop_requested || (stop_when_round_done && round_open == 0)) return;
        int64_t wake = until;
        if (heap_n > 0 && heap[0]->due < wake) wake = heap[0]->due;
        int64_t wait = wake > now ? wake - now : 0;
        struct timespec ts = {.tv_sec = wait / 1000000000, .tv_nsec = wait % 1000000000};
        int n = epoll_pwait2(ep, evs, 256, &ts, NULL);
        if (n < 0 && errno != EINTR) die("epoll_pwait2: %s", strerror(errno));
        for (int i = 0; i < n; i++) on_event(evs[i].data.ptr, evs[i].events);
    }
}

static int arg_int(int argc, char **argv, int *i) {
    if (*i + 1 >= argc) die("%s needs a value", argv[*i]);
    char *end;
    long v = strtol(argv[++*i], &end, 10);
    if (*end || v < 0 || v > 1000000) die("%s: '%s' is not a number in 0..1000000", argv[*i - 1], argv[*i]);
    return (int)v;
}

static void on_stop(int sig) {
    (void)sig;
    stop_requested = 1;
}

static void listen_on(int port) {
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) < 0) die("bind 127.0.0.1:%d: %s", port, strerror(errno));
    if (listen(lfd, 4096) < 0) die("listen: %s", strerror(errno));
    watch(conn_new(K_LISTEN, lfd), EPOLL_CTL_ADD, EPOLLIN);
}

int main(int argc, char **argv) {
    char *names = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--listen")) opt_listen = arg_int(argc, argv, &i);
        else if (!strcmp(argv[i], "--proxy")) {
            if (++i >= argc) die("--proxy needs a port list");
            for (char *p = strtok(argv[i], ","); p; p = strtok(NULL, ",")) {
                if (n_proxies == MAXPROXIES) die("--proxy: at most %d ports", MAXPROXIES);
                char *end;
                long v = strtol(p, &end, 10);
                if (*end || v < 1 || v > 65535) die("--proxy: '%s' is not a port", p);
                opt_proxy[n_proxies++] = (int)v;
            }
        } else if (!strcmp(argv[i], "--names")) {
            if (++i >= argc) die("--names needs a name list");
            names = argv[i];
        }
        else if (!strcmp(argv[i], "--streams")) opt_streams = arg_int(argc, argv, &i);
        else if (!strcmp(argv[i], "--rounds")) opt_rounds = arg_int(argc, argv, &i);
        else if (!strcmp(argv[i], "--warmup-rounds")) opt_warmup = arg_int(argc, argv, &i);
        else if (!strcmp(argv[i], "--chunks")) opt_chunks = arg_int(argc, argv, &i);
        else if (!strcmp(argv[i], "--interval-ms")) opt_interval_ms = arg_int(argc, argv, &i);
        else if (!strcmp(argv[i], "--floor")) opt_floor = arg_int(argc, argv, &i);
        else if (!strcmp(argv[i], "--role")) {
            if (++i >= argc) die("--role needs both, upstream or client");
            if (!strcmp(argv[i], "both")) opt_role = ROLE_BOTH;
            else if (!strcmp(argv[i], "upstream")) opt_role = ROLE_UPSTREAM;
            else if (!strcmp(argv[i], "client")) opt_role = ROLE_CLIENT;
            else die("--role: '%s' is not both, upstream or client", argv[i]);
        } else if (!strcmp(argv[i], "--out")) { if (++i >= argc) die("--out needs a file"); opt_out = argv[i]; }
        else die("unknown option %s (see the comment at the top of sse_lag.c)", argv[i]);
    }
    if (!opt_listen || !opt_out || (!n_proxies && opt_role != ROLE_UPSTREAM)) die("--listen, --proxy and --out are required");
    group_name[0] = "direct";
    for (int g = 1; g <= n_proxies; g++) {
        char *name = names ? strsep(&names, ",") : NULL;
        if (!name || !*name) {
            static char dflt[MAXPROXIES][16];
            snprintf(dflt[g - 1], sizeof dflt[g - 1], g == 1 ? "proxy" : "proxy%d", g);
            name = dflt[g - 1];
        }
        if (strchr(name, ' ') || !strcmp(name, "direct") || !strcmp(name, "floor")) die("--names: '%s' cannot name a proxy", name);
        group_name[g] = name;
    }
    group_name[n_proxies + 1] = "floor";
    if (opt_streams < 1 || opt_rounds < 1 || opt_chunks < 1 || opt_chunks > 100000 || opt_interval_ms < 1)
        die("--streams, --rounds, --chunks and --interval-ms must be at least 1");
    groups = 1 + n_proxies + (opt_floor ? 1 : 0);
    per_round = groups * opt_streams;
    total_streams = opt_role == ROLE_UPSTREAM ? 100000000 : per_round * (opt_rounds + opt_warmup);
    events_per_stream = opt_chunks + 2;
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0); // wake for a chunk's send time, not up to 50 µs later
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (opt_role == ROLE_UPSTREAM) {
        struct sigaction sa = {.sa_handler = on_stop}; // no SA_RESTART: epoll_pwait2 returns EINTR
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);
        listen_on(opt_listen);
        run_loop(INT64_MAX, 0);
        FILE *f = fopen(opt_out, "w");
        if (!f) die("cannot write %s: %s", opt_out, strerror(errno));
        for (size_t i = 0; i < sent_n; i++) fprintf(f, "U %d %d %" PRId64 "\n", sent_log[i].id, sent_log[i].k, sent_log[i].t);
        if (fclose(f) != 0) die("writing %s failed", opt_out);
        return 0;
    }
    sent_at = calloc((size_t)total_streams * events_per_stream, sizeof *sent_at);
    recv_at = calloc((size_t)total_streams * events_per_stream, sizeof *recv_at);
    info = calloc((size_t)total_streams, sizeof *info);
    round_clients = calloc((size_t)per_round, sizeof *round_clients);
    if (!sent_at || !recv_at || !info || !round_clients) die("out of memory");
    if (opt_role == ROLE_BOTH) listen_on(opt_listen);
    int64_t interval = (int64_t)opt_interval_ms * 1000000;
    int64_t round_timeout = 10000000000LL + 3 * (int64_t)opt_chunks * interval;
    int id = 0, failed = 0;
    for (int r = 1 - opt_warmup; r <= opt_rounds; r++) {
        int64_t base = now_ns() + 50000000;
        round_open = per_round;
        for (int i = 0; i < per_round; i++, id++) {
            struct conn *c = conn_new(K_CLIENT, -1);
            c->cid = id;
            round_clients[i] = c;
            info[id].round = r;
            info[id].group = i % groups; // direct, proxy(s), floor, direct, proxy(s), ...
            // Staggered over one chunk interval, so that not every stream's chunk k is due in the same instant.
            schedule(c, base + (int64_t)i * interval / per_round);
        }
        run_loop(base + round_timeout, 1);
        if (round_open > 0) {
            // Streams still open at the timeout: finish them as failed (each frees its connection).
            for (int i = 0; i < per_round; i++)
                if (round_clients[i]) client_finish(round_clients[i], round_clients[i]->state == 0 ? "not started" : "timed out");
            fprintf(stderr, "sse_lag: round %d: %d streams still open after %" PRId64 " s\n", r, round_open, round_timeout / 1000000000);
            failed = 1;
            break;
        }
        run_loop(now_ns() + 200000000, 0); // let the server side's last writes and the proxy settle
    }

    FILE *f = fopen(opt_out, "w");
    if (!f) die("cannot write %s: %s", opt_out, strerror(errno));
    for (int s = 0; s < id; s++) {
        struct stream_info *in = &info[s];
        fprintf(f, "S %d %s %d %d %d %" PRId64 " %s\n", in->round, group_name[in->group], s, in->ok, in->chunks, in->req_ns,
                in->err[0] ? in->err : "-");
        for (int k = 0; k < events_per_stream && k < in->chunks; k++) {
            size_t at = (size_t)s * events_per_stream + k;
            fprintf(f, "C %d %d %" PRId64 " %" PRId64 "\n", s, k, sent_at[at], recv_at[at]);
        }
    }
    if (fclose(f) != 0) die("writing %s failed", opt_out);
    return failed;
}
