using System.Net;
using System.Net.Sockets;
using System.Text;

namespace LLMProxy.Tests.Reliability;

/// <summary>One raw HTTP/1.1 response as read off the socket.</summary>
internal sealed record RawResponse(int Status, string Head, byte[] Body)
{
    public string BodyText => Encoding.UTF8.GetString(Body);
}

/// <summary>
/// A client on a bare socket, for input no well-behaved HTTP client will produce: oversized or malformed
/// heads, trickled bytes, bodies that stop half way, abortive closes.
/// </summary>
internal sealed class RawClient : IAsyncDisposable
{
    private readonly Socket _socket;
    private readonly byte[] _buffer = new byte[64 * 1024];
    private int _filled;

    private RawClient(Socket socket)
    {
        _socket = socket;
    }

    public static async Task<RawClient> ConnectAsync(int port)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        await socket.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port));
        return new RawClient(socket);
    }

    public static int PortOf(string url) => new Uri(url).Port;

    public async Task SendAsync(string text) => await SendAsync(Encoding.ASCII.GetBytes(text));

    public async Task SendAsync(ReadOnlyMemory<byte> bytes)
    {
        var sent = 0;
        while (sent < bytes.Length)
        {
            sent += await _socket.SendAsync(bytes[sent..], SocketFlags.None);
        }
    }

    /// <summary>Reads one response (head, then a Content-Length or chunked body). Throws
    /// <see cref="EndOfStreamException"/> when the server closes first.</summary>
    public async Task<RawResponse> ReadResponseAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        var (status, head) = await ReadHeadAsync(cts.Token);
        var body = new MemoryStream();
        var lengthLine = head.Split("\r\n").FirstOrDefault(l => l.StartsWith("Content-Length:", StringComparison.OrdinalIgnoreCase));
        if (lengthLine is not null)
        {
            var length = int.Parse(lengthLine.AsSpan("Content-Length:".Length).Trim(), System.Globalization.CultureInfo.InvariantCulture);
            while (_filled < length)
            {
                await FillAsync(cts.Token);
            }
            body.Write(_buffer, 0, length);
            Consume(length);
        }
        else if (head.Contains("Transfer-Encoding: chunked", StringComparison.OrdinalIgnoreCase))
        {
            while (true)
            {
                int lineEnd;
                while ((lineEnd = _buffer.AsSpan(0, _filled).IndexOf("\r\n"u8)) < 0)
                {
                    await FillAsync(cts.Token);
                }
                var size = Convert.ToInt32(Encoding.ASCII.GetString(_buffer, 0, lineEnd).Split(';')[0], 16);
                Consume(lineEnd + 2);
                while (_filled < size + 2)
                {
                    await FillAsync(cts.Token);
                }
                body.Write(_buffer, 0, size);
                Consume(size + 2);
                if (size == 0)
                {
                    break;
                }
            }
        }
        return new RawResponse(status, head, body.ToArray());
    }

    /// <summary>Reads one response head and nothing after it: the answer to a HEAD request announces a length it
    /// never sends.</summary>
    public async Task<RawResponse> ReadHeadOnlyAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        var (status, head) = await ReadHeadAsync(cts.Token);
        return new RawResponse(status, head, []);
    }

    private async Task<(int Status, string Head)> ReadHeadAsync(CancellationToken ct)
    {
        int headEnd;
        while ((headEnd = _buffer.AsSpan(0, _filled).IndexOf("\r\n\r\n"u8)) < 0)
        {
            await FillAsync(ct);
        }
        var head = Encoding.ASCII.GetString(_buffer, 0, headEnd);
        Consume(headEnd + 4);
        return (int.Parse(head.AsSpan(9, 3), System.Globalization.CultureInfo.InvariantCulture), head);
    }

    /// <summary>True when the server closed (FIN or RST) within <paramref name="timeout"/>; any bytes that
    /// arrive first are skipped.</summary>
    public async Task<bool> WaitForCloseAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            while (true)
            {
                var n = await _socket.ReceiveAsync(_buffer, SocketFlags.None, cts.Token);
                if (n == 0)
                {
                    return true;
                }
            }
        }
        catch (SocketException)
        {
            return true;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }

    /// <summary>Reads until the server closes (FIN or RST) or <paramref name="timeout"/> passes: whether it closed, and
    /// how many bytes arrived first.</summary>
    public async Task<(bool Closed, int Received)> ReadUntilCloseAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        var received = _filled;
        try
        {
            while (true)
            {
                var n = await _socket.ReceiveAsync(_buffer, SocketFlags.None, cts.Token);
                if (n == 0)
                {
                    return (true, received);
                }
                received += n;
            }
        }
        catch (SocketException)
        {
            return (true, received);
        }
        catch (OperationCanceledException)
        {
            return (false, received);
        }
    }

    /// <summary>Abortive close: RST, the way a crashed client or a dropped network looks.</summary>
    public void Reset()
    {
        _socket.LingerState = new LingerOption(true, 0);
        _socket.Close();
    }

    private async Task FillAsync(CancellationToken ct)
    {
        var n = await _socket.ReceiveAsync(_buffer.AsMemory(_filled), SocketFlags.None, ct);
        if (n == 0)
        {
            throw new EndOfStreamException("server closed the connection; got: " + Encoding.ASCII.GetString(_buffer, 0, _filled));
        }
        _filled += n;
    }

    private void Consume(int count)
    {
        Buffer.BlockCopy(_buffer, count, _buffer, 0, _filled - count);
        _filled -= count;
    }

    public ValueTask DisposeAsync()
    {
        _socket.Dispose();
        return ValueTask.CompletedTask;
    }
}
