#!/usr/bin/env python3
"""Connection-flood trials against the real binary under a low open-file limit (prlimit).

Each trial starts a fresh proxy (cold unless --warm N) in front of the built-in mock, opens one keep-alive client
connection, then floods the forward with --conns raw connections that are held open and never send anything (with
--send, each sends a whole chat request at once and never reads the answer: every connection the proxy keeps then
also needs an upstream connection). While
they are held it checks that the proxy still serves: a request on the keep-alive connection, and /metrics on a fresh
admin connection. Then it releases them and checks that a fresh connection is served. It records whether the process
survived ("Out of memory." = the runtime could not start a thread for want of a descriptor; docs/RELIABILITY.md).

    python3 bench/fdflood.py --trials 20 [--warm 5] [--idle 25] [--limit 400] [--conns 600] [--dll PATH]

Bounded: every wait has a timeout, loopback only, one proxy and one mock at a time, both stopped by PID.
"""
import argparse
import http.client
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

BODY = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
REQUEST = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
           b"Content-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    def __init__(self, argv):
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.p.stdout:
            self.lines.append(line)

    def wait_for(self, text, count=1, timeout=60):
        end = time.time() + timeout
        while time.time() < end:
            if sum(text in line for line in self.lines) >= count:
                return True
            if self.p.poll() is not None:
                return False
            time.sleep(0.05)
        return False

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        return self.p.returncode

    @property
    def text(self):
        return "".join(self.lines)


def request(port, path, conn=None, timeout=5):
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read().decode("utf-8", "replace")
        return response.status, body
    finally:
        if own:
            conn.close()


def sample(metrics, name):
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def trial(args, mock_port):
    port, admin = free_port(), free_port()
    fd, cfg = tempfile.mkstemp(prefix="llmproxy-fdflood-", suffix=".yaml")
    with os.fdopen(fd, "w") as f:
        f.write(f"""httpServer:
  forwards:
    - name: main
      port: {port}
      address: "127.0.0.1"
      defaultGroup: g
  admin:
    port: {admin}
    address: "127.0.0.1"
upstreams:
  - name: u1
    url: "http://127.0.0.1:{mock_port}"
upstreamGroups:
  - name: g
    upstreams:
      - name: u1
""")
    proxy = Proc(["/usr/bin/prlimit", f"--nofile={args.limit}:{args.limit}", "dotnet", args.dll, "-c", cfg])
    result = {"start": False, "during": None, "admin_during": None, "after": None, "shed": None}
    held = []
    keep = None
    try:
        if not proxy.wait_for("ready:", 2):
            return result, proxy
        result["start"] = True
        for _ in range(args.warm):
            request(port, "/v1/models")
        time.sleep(args.idle)
        keep = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        keep.connect()
        for _ in range(args.conns):
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            held.append(s)
        if args.send:
            for s in held:
                try:
                    s.setblocking(True)
                    s.settimeout(1)
                    s.sendall(REQUEST)
                except OSError:
                    pass  # shed by the proxy: closed or reset
        time.sleep(args.hold)
        try:
            result["during"] = request(port, "/v1/models", conn=keep, timeout=10)[0]
        except (OSError, http.client.HTTPException) as e:
            result["during"] = type(e).__name__
        try:
            status, metrics = request(admin, "/metrics", timeout=10)
            result["admin_during"] = status
            result["shed"] = int(sample(metrics, "llmproxy_connections_shed_total"))
        except (OSError, http.client.HTTPException) as e:
            result["admin_during"] = type(e).__name__
    finally:
        for s in held:
            s.close()
        if keep:
            keep.close()
    end = time.time() + 30
    while time.time() < end and proxy.p.poll() is None:
        try:
            if request(port, "/v1/models")[0] == 200:
                result["after"] = 200
                break
        except (OSError, http.client.HTTPException):
            time.sleep(0.1)
    os.unlink(cfg)
    return result, proxy


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--warm", type=int, default=0, help="requests before the flood (0 = cold)")
    parser.add_argument("--idle", type=float, default=0, help="seconds idle between the warm-up and the flood")
    parser.add_argument("--limit", type=int, default=400)
    parser.add_argument("--conns", type=int, default=600)
    parser.add_argument("--send", action="store_true", help="every flood connection sends a whole request, never reads")
    parser.add_argument("--hold", type=float, default=2, help="seconds the flood is held before the checks")
    parser.add_argument("--dll", default=os.path.join(ROOT, "src/LLMProxy/bin/Release/net10.0/llmproxy.dll"))
    args = parser.parse_args()

    mock_port = free_port()
    mock = Proc(["dotnet", args.dll, "mock", "--port", str(mock_port)])
    try:
        if not mock.wait_for(str(mock_port), timeout=60):
            sys.exit("mock did not start:\n" + mock.text)
        aborted = 0
        failed = 0
        for i in range(args.trials):
            t0 = time.time()
            result, proxy = trial(args, mock_port)
            alive = proxy.p.poll() is None
            code = proxy.stop()
            oom = "Out of memory" in proxy.text
            crashed = not alive or oom
            ok = not crashed and result["start"] and result["during"] == 200 and result["admin_during"] == 200 and result["after"] == 200
            aborted += crashed
            failed += not ok
            print(f"trial {i + 1}: {result} alive={alive} exit={code} oom={oom} {time.time() - t0:.1f}s", flush=True)
            if not ok:
                tail = "\n".join(proxy.text.splitlines()[-30:])
                print(re.sub(r"^", "    ", tail, flags=re.M), flush=True)
        print(f"{args.trials} trials (warm {args.warm}, idle {args.idle} s, limit {args.limit}, {args.conns} connections"
              f"{', each sending a request' if args.send else ''}): "
              f"{aborted} aborted, {failed} not serving during or after the flood", flush=True)
    finally:
        mock.stop()


if __name__ == "__main__":
    main()
