using System.Net;
using System.Net.Sockets;
using System.Text;

namespace LLMProxy.Tests.Infrastructure;

/// <summary>How <see cref="FaultyUpstream"/> treats the next request.</summary>
public enum FaultMode
{
    /// <summary>200 with a small JSON body (keep-alive).</summary>
    Ok,
    /// <summary>200 text/event-stream: <see cref="FaultyUpstream.SseEvents"/> events, then <c>data: [DONE]</c> and a clean chunked end.</summary>
    OkSse,
    /// <summary>Nothing listens on the port: connections are refused.</summary>
    Refuse,
    /// <summary>Accepts, reads the request head, then resets the connection (RST, no response).</summary>
    Reset,
    /// <summary>Reads the request and never answers, until the peer gives up.</summary>
    HangBeforeHeaders,
    /// <summary>Sends SSE headers and some events, then goes silent with the connection open.</summary>
    StallMidStream,
    /// <summary>Sends SSE headers and some events, then closes the connection (FIN) without the chunked terminator.</summary>
    CloseMidSse,
    /// <summary>Answers bytes that are not HTTP, then closes.</summary>
    Garbage,
    /// <summary>Answers <see cref="FaultyUpstream.Status"/> with a JSON error body (429 adds <c>Retry-After: 1</c>).</summary>
    Status,
    /// <summary>Answers <see cref="FaultyUpstream.RawAnswer"/> byte for byte (then, after <see cref="FaultyUpstream.FaultDelay"/>,
    /// <see cref="FaultyUpstream.RawTail"/> if set), then closes the connection (FIN): any response below HTTP's rules —
    /// a bad status, bad header bytes, a lying Content-Length, a broken chunk.</summary>
    Raw,
}

/// <summary>
/// A loopback upstream on a raw socket, so it can misbehave below HTTP: refuse, reset, hang, stall or cut
/// a stream, answer garbage, answer error bursts — and recover when the mode is switched at run time.
/// Kestrel cannot be made to do most of these, which is why this speaks HTTP/1.1 by hand.
/// </summary>
public sealed class FaultyUpstream : IAsyncDisposable
{
    private static readonly byte[] HeadEnd = "\r\n\r\n"u8.ToArray();
    private readonly Lock _lock = new();
    private readonly CancellationTokenSource _disposed = new();
    private readonly List<Socket> _open = [];
    private readonly SemaphoreSlim _changed = new(0);
    private Socket? _listener;
    private FaultMode _mode;
    private int _burstLeft = -1;
    private FaultMode _afterBurst = FaultMode.Ok;
    private int _requests;
    private int _connections;
    private int _peerGaveUp;

    private FaultyUpstream(int port)
    {
        Port = port;
    }

    public int Port { get; }
    public string Url => $"http://127.0.0.1:{Port}";
    /// <summary>Name sent in the <c>X-Upstream</c> response header.</summary>
    public string Name { get; init; } = "faulty";
    /// <summary>Events sent before the end (<see cref="FaultMode.OkSse"/>) or before the fault (stall, close).</summary>
    public int SseEvents { get; set; } = 3;
    /// <summary>Pause between the last event and a stream fault (stall, close), so the events are on the wire
    /// before the fault: a proxy that aborts its client drops output it has not sent yet. Default 100 ms.</summary>
    public TimeSpan FaultDelay { get; set; } = TimeSpan.FromMilliseconds(100);
    /// <summary>What <see cref="FaultMode.Raw"/> sends, head and body.</summary>
    public byte[] RawAnswer { get; set; } = [];
    /// <summary>Sent by <see cref="FaultMode.Raw"/> <see cref="FaultDelay"/> after <see cref="RawAnswer"/>, so what came
    /// first is on its way to the client before this (a broken chunk, a close) arrives.</summary>
    public byte[]? RawTail { get; set; }
    /// <summary>Status answered in <see cref="FaultMode.Status"/>.</summary>
    public int Status { get; set; } = 503;
    /// <summary>Request heads received (a refused connection never gets here).</summary>
    public int Requests => Volatile.Read(ref _requests);
    public int Connections => Volatile.Read(ref _connections);
    /// <summary>Connections the peer (the proxy) closed while this upstream hung or stalled: the proof a call was cancelled.</summary>
    public int PeerGaveUp => Volatile.Read(ref _peerGaveUp);
    public int OpenConnections
    {
        get { lock (_lock) { return _open.Count; } }
    }

    public FaultMode Mode
    {
        get { lock (_lock) { return _mode; } }
    }

    public static FaultyUpstream Start(FaultMode mode = FaultMode.Ok, string name = "faulty")
    {
        // Reserve a port, then (unless refusing) listen on it; Refuse keeps the port closed.
        var probe = NewListener(0);
        var port = ((IPEndPoint)probe.LocalEndPoint!).Port;
        probe.Dispose();
        var upstream = new FaultyUpstream(port) { Name = name };
        upstream.SetMode(mode);
        return upstream;
    }

    /// <summary>Switches how the next requests are treated. Refuse closes the listener and every open connection
    /// (like a crashed process); leaving Refuse listens on the same port again.</summary>
    public void SetMode(FaultMode mode)
    {
        lock (_lock)
        {
            _mode = mode;
            _burstLeft = -1;
            ApplyListenerLocked();
        }
        _changed.Release();
    }

    /// <summary>The next <paramref name="count"/> requests get <paramref name="mode"/>, then <paramref name="then"/>.</summary>
    public void Burst(FaultMode mode, int count, FaultMode then = FaultMode.Ok)
    {
        lock (_lock)
        {
            _mode = mode;
            _burstLeft = count;
            _afterBurst = then;
            ApplyListenerLocked();
        }
        _changed.Release();
    }

    /// <summary>Waits (signalled, not polled) until <paramref name="condition"/> holds.</summary>
    public async Task WaitUntilAsync(Func<FaultyUpstream, bool> condition, TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        while (!condition(this))
        {
            try
            {
                await _changed.WaitAsync(cts.Token);
            }
            catch (OperationCanceledException)
            {
                throw new TimeoutException($"condition not met in {timeout} (requests={Requests}, connections={Connections}, peerGaveUp={PeerGaveUp}, open={OpenConnections})");
            }
        }
    }

    private void ApplyListenerLocked()
    {
        if (_disposed.IsCancellationRequested)
        {
            return;
        }
        if (_mode == FaultMode.Refuse)
        {
            _listener?.Dispose();
            _listener = null;
            foreach (var s in _open)
            {
                Reset(s);
            }
            _open.Clear();
            return;
        }
        if (_listener is null)
        {
            _listener = NewListener(Port);
            _ = AcceptLoopAsync(_listener);
        }
    }

    private static Socket NewListener(int port)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        // Rebinding the same port after Refuse must not fail on connections in TIME_WAIT.
        socket.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, port));
        socket.Listen(512);
        return socket;
    }

    private async Task AcceptLoopAsync(Socket listener)
    {
        while (true)
        {
            Socket client;
            try
            {
                client = await listener.AcceptAsync(_disposed.Token);
            }
            catch (Exception ex) when (ex is SocketException or ObjectDisposedException or OperationCanceledException)
            {
                return;
            }
            client.NoDelay = true;
            lock (_lock)
            {
                _open.Add(client);
            }
            Interlocked.Increment(ref _connections);
            _changed.Release();
            _ = Task.Run(() => ServeAsync(client));
        }
    }

    private FaultMode TakeMode()
    {
        lock (_lock)
        {
            var mode = _mode;
            if (_burstLeft > 0 && --_burstLeft == 0)
            {
                _mode = _afterBurst;
                _burstLeft = -1;
            }
            return mode;
        }
    }

    private async Task ServeAsync(Socket socket)
    {
        var ct = _disposed.Token;
        var buffer = new byte[16 * 1024];
        var filled = 0;
        try
        {
            while (true)
            {
                // Read one request head.
                int headEnd;
                while ((headEnd = buffer.AsSpan(0, filled).IndexOf(HeadEnd)) < 0)
                {
                    if (filled == buffer.Length)
                    {
                        return;
                    }
                    var n = await socket.ReceiveAsync(buffer.AsMemory(filled), SocketFlags.None, ct);
                    if (n == 0)
                    {
                        return;
                    }
                    filled += n;
                }
                var head = Encoding.ASCII.GetString(buffer, 0, headEnd);
                var consumed = headEnd + HeadEnd.Length;
                Interlocked.Increment(ref _requests);
                _changed.Release();
                var mode = TakeMode();
                if (mode is FaultMode.Reset or FaultMode.Refuse)
                {
                    Reset(socket);
                    return;
                }
                (filled, var complete) = await SkipBodyAsync(socket, head, buffer, consumed, filled, ct);
                if (!complete)
                {
                    return;
                }
                switch (mode)
                {
                    case FaultMode.Ok:
                        await SendAsync(socket, Response(200, "application/json", $"{{\"upstream\":\"{Name}\"}}"), ct);
                        continue;
                    case FaultMode.Status:
                        var status = Status;
                        await SendAsync(socket, Response(status, "application/json",
                            $"{{\"error\":{{\"message\":\"{Name} says {status}\",\"type\":\"upstream\"}}}}",
                            status == 429 ? "Retry-After: 1\r\n" : ""), ct);
                        continue;
                    case FaultMode.OkSse:
                        await SendSseAsync(socket, SseEvents, ct);
                        await SendAsync(socket, Chunk("data: [DONE]\n\n") + "0\r\n\r\n", ct);
                        continue;
                    case FaultMode.StallMidStream:
                        await SendSseAsync(socket, SseEvents, ct);
                        await Task.Delay(FaultDelay, ct);
                        await WaitForPeerToGiveUpAsync(socket, ct);
                        return;
                    case FaultMode.HangBeforeHeaders:
                        await WaitForPeerToGiveUpAsync(socket, ct);
                        return;
                    case FaultMode.CloseMidSse:
                        await SendSseAsync(socket, SseEvents, ct);
                        await Task.Delay(FaultDelay, ct);
                        socket.Shutdown(SocketShutdown.Send);
                        return;
                    case FaultMode.Raw:
                        await socket.SendAsync(RawAnswer, SocketFlags.None, ct);
                        if (RawTail is { } tail)
                        {
                            await Task.Delay(FaultDelay, ct);
                            await socket.SendAsync(tail, SocketFlags.None, ct);
                        }
                        socket.Shutdown(SocketShutdown.Send);
                        return;
                    case FaultMode.Garbage:
                        await SendAsync(socket, "SSH-2.0-OpenSSH_9.6\r\n\x01\x02 definitely not http\r\n\r\n", ct);
                        socket.Shutdown(SocketShutdown.Send);
                        return;
                }
            }
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException or OperationCanceledException or IOException)
        {
        }
        finally
        {
            lock (_lock)
            {
                _open.Remove(socket);
            }
            socket.Dispose();
            _changed.Release();
        }
    }

    /// <summary>Reads (and drops) the request body; returns the bytes of the next request already read.</summary>
    private static async Task<(int Filled, bool Complete)> SkipBodyAsync(Socket socket, string head, byte[] buffer, int consumed, int filled, CancellationToken ct)
    {
        long length = 0;
        var chunked = false;
        foreach (var line in head.Split("\r\n"))
        {
            if (line.StartsWith("Content-Length:", StringComparison.OrdinalIgnoreCase))
            {
                length = long.Parse(line.AsSpan("Content-Length:".Length).Trim(), System.Globalization.CultureInfo.InvariantCulture);
            }
            else if (line.StartsWith("Transfer-Encoding:", StringComparison.OrdinalIgnoreCase) && line.Contains("chunked", StringComparison.OrdinalIgnoreCase))
            {
                chunked = true;
            }
        }
        // Shift the unread bytes to the front.
        Buffer.BlockCopy(buffer, consumed, buffer, 0, filled - consumed);
        filled -= consumed;
        if (chunked)
        {
            // Good enough for a test upstream: the body ends with the zero-length chunk.
            var end = "0\r\n\r\n"u8.ToArray();
            int at;
            var window = new List<byte>();
            while (true)
            {
                window.AddRange(buffer.AsSpan(0, filled).ToArray());
                filled = 0;
                var all = window.ToArray();
                if ((at = all.AsSpan().IndexOf(end)) >= 0)
                {
                    var rest = all.Length - (at + end.Length);
                    all.AsSpan(at + end.Length, rest).CopyTo(buffer);
                    return (rest, true);
                }
                var n = await socket.ReceiveAsync(buffer, SocketFlags.None, ct);
                if (n == 0)
                {
                    return (0, false);
                }
                filled = n;
            }
        }
        while (length > 0)
        {
            if (filled > 0)
            {
                var take = (int)Math.Min(filled, length);
                Buffer.BlockCopy(buffer, take, buffer, 0, filled - take);
                filled -= take;
                length -= take;
                continue;
            }
            var n = await socket.ReceiveAsync(buffer, SocketFlags.None, ct);
            if (n == 0)
            {
                return (0, false);
            }
            filled = n;
        }
        return (filled, true);
    }

    private async Task WaitForPeerToGiveUpAsync(Socket socket, CancellationToken ct)
    {
        var sink = new byte[256];
        try
        {
            while (await socket.ReceiveAsync(sink, SocketFlags.None, ct) > 0)
            {
            }
        }
        catch (SocketException)
        {
            // A reset is giving up too.
        }
        if (!ct.IsCancellationRequested)
        {
            Interlocked.Increment(ref _peerGaveUp);
        }
    }

    private string Response(int status, string contentType, string body, string extraHeaders = "") =>
        $"HTTP/1.1 {status} {ReasonPhrase(status)}\r\nContent-Type: {contentType}\r\nContent-Length: {Encoding.UTF8.GetByteCount(body)}\r\nX-Upstream: {Name}\r\n{extraHeaders}\r\n{body}";

    private async Task SendSseAsync(Socket socket, int events, CancellationToken ct)
    {
        await SendAsync(socket, $"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\nX-Upstream: {Name}\r\n\r\n", ct);
        for (var i = 0; i < events; i++)
        {
            await SendAsync(socket, Chunk($"data: {{\"n\":{i}}}\n\n"), ct);
        }
    }

    private static string Chunk(string data) => $"{Encoding.UTF8.GetByteCount(data):x}\r\n{data}\r\n";

    private static async Task SendAsync(Socket socket, string text, CancellationToken ct)
    {
        var bytes = Encoding.UTF8.GetBytes(text);
        var sent = 0;
        while (sent < bytes.Length)
        {
            sent += await socket.SendAsync(bytes.AsMemory(sent), SocketFlags.None, ct);
        }
    }

    private static string ReasonPhrase(int status) => status switch
    {
        200 => "OK",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    };

    /// <summary>Abortive close: linger 0 makes Close send RST instead of FIN.</summary>
    private static void Reset(Socket socket)
    {
        try
        {
            socket.LingerState = new LingerOption(true, 0);
            socket.Close();
        }
        catch (ObjectDisposedException)
        {
        }
    }

    public ValueTask DisposeAsync()
    {
        lock (_lock)
        {
            _disposed.Cancel();
            _listener?.Dispose();
            _listener = null;
            foreach (var s in _open)
            {
                Reset(s);
            }
            _open.Clear();
        }
        _changed.Release();
        return ValueTask.CompletedTask;
    }
}
