using System.Buffers;
using System.IO.Pipelines;
using System.Reflection;
using LLMProxy.Observability;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Logging;

namespace LLMProxy.Hosting;

/// <summary>
/// SPEC §3.1: a forward speaks HTTP/1.1 and h2c (HTTP/2 with prior knowledge, RFC 9113 §3.3) on the same cleartext
/// port. Without TLS there is no ALPN, and Kestrel then always picks HTTP/1.1 for an endpoint that allows both
/// (dotnet/aspnetcore#56984), so this connection middleware reads the first bytes itself: a connection that opens with
/// the 24-byte HTTP/2 client preface is handed to Kestrel as HTTP/2, anything else as HTTP/1.1, with every byte left
/// unconsumed for Kestrel's parser. One decision per connection, none per request: an HTTP/1.1 request costs nothing.
/// <para>
/// The choice travels in Kestrel's own per-connection protocol feature (<c>HttpProtocolsFeature</c>, the one its TLS
/// SNI options use); it is internal, so it is found by reflection once. If a Kestrel version ever lacks it, h2c is
/// off with one Warning at start and HTTP/1.1 is untouched (<see cref="Available"/>; a test fails first).
/// </para>
/// <para>
/// Until the first bytes decide, the connection is held at most <c>timeout.idle</c> (what Kestrel allows a new
/// connection before its first request) and released when the server stops. A client can keep it undecided only
/// by sending a proper prefix of the preface (<c>PRI * HTTP/2.0…</c>), which no HTTP/1.1 request starts with.
/// </para>
/// </summary>
internal sealed class CleartextHttp2
{
    private static readonly byte[] Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"u8.ToArray();
    private static readonly (Type Type, object Http2)? Feature = FindFeature();

    private readonly TimeSpan _firstBytes;
    private readonly bool _countsRequests;

    /// <param name="firstBytes">How long a new connection may take to decide (<c>timeout.idle</c>); also how long an
    /// HTTP/2 connection may stay without a request when <paramref name="countsRequests"/>.</param>
    /// <param name="countsRequests">The listener's requests report to <see cref="Http2Activity"/> (the forward's handler
    /// does), so an idle HTTP/2 connection can be closed.</param>
    public CleartextHttp2(TimeSpan firstBytes, bool countsRequests)
    {
        _firstBytes = firstBytes;
        _countsRequests = countsRequests;
    }

    /// <summary>Whether this Kestrel can be told to speak HTTP/2 on a cleartext connection.</summary>
    public static bool Available => Feature is not null;

    /// <summary>For <c>ListenOptions.Use</c>; with h2c unavailable, <paramref name="next"/> unchanged.</summary>
    public ConnectionDelegate Wrap(ConnectionDelegate next) =>
        Feature is { } feature ? connection => SelectAsync(connection, next, feature) : next;

    /// <summary>Logs once at start when h2c cannot be offered.</summary>
    public static void WarnIfUnavailable(ILogger logger)
    {
        if (!Available)
        {
            Log.CleartextHttp2Unavailable(logger);
        }
    }

    private async Task SelectAsync(ConnectionContext connection, ConnectionDelegate next, (Type Type, object Http2) feature)
    {
        var verdict = await ReadVerdictAsync(connection).ConfigureAwait(false);
        if (verdict == Verdict.Close)
        {
            return; // Kestrel disposes the connection: closed, as its own keep-alive timeout would
        }
        if (verdict != Verdict.Http2)
        {
            await next(connection).ConfigureAwait(false);
            return;
        }
        connection.Features[feature.Type] = feature.Http2;
        using var activity = _countsRequests ? new Http2Activity(connection, _firstBytes) : null;
        connection.Features.Set(activity);
        await next(connection).ConfigureAwait(false);
    }

    private async ValueTask<Verdict> ReadVerdictAsync(ConnectionContext connection)
    {
        var input = connection.Transport.Input;
        using var wait = new CancellationTokenSource(_firstBytes);
        using var stopping = connection.Features.Get<IConnectionLifetimeNotificationFeature>()?.ConnectionClosedRequested
            .UnsafeRegister(static state => ((CancellationTokenSource)state!).Cancel(), wait);
        while (true)
        {
            ReadResult result;
            try
            {
                result = await input.ReadAsync(wait.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return Verdict.Close;
            }
            catch (Exception ex) when (ex is IOException or ConnectionResetException or ConnectionAbortedException)
            {
                return Verdict.Close;
            }
            var buffer = result.Buffer;
            var verdict = Classify(buffer);
            if (verdict == Verdict.Undecided && !result.IsCompleted && !result.IsCanceled)
            {
                input.AdvanceTo(buffer.Start, buffer.End); // wait for more than these bytes
                continue;
            }
            input.AdvanceTo(buffer.Start); // nothing consumed, nothing examined: Kestrel's first read sees it all at once
            return verdict == Verdict.Http2 ? Verdict.Http2 : Verdict.Http1;
        }
    }

    /// <summary>HTTP/2 once the whole preface is there, HTTP/1.1 as soon as a byte differs from it.</summary>
    internal static Verdict Classify(ReadOnlySequence<byte> buffer)
    {
        Span<byte> head = stackalloc byte[Preface.Length];
        var length = (int)Math.Min(buffer.Length, Preface.Length);
        buffer.Slice(0, length).CopyTo(head);
        if (!head[..length].SequenceEqual(Preface.AsSpan(0, length)))
        {
            return Verdict.Http1;
        }
        return length == Preface.Length ? Verdict.Http2 : Verdict.Undecided;
    }

    private static (Type, object)? FindFeature()
    {
        var type = typeof(KestrelServerOptions).Assembly.GetType("Microsoft.AspNetCore.Server.Kestrel.Core.Internal.HttpProtocolsFeature");
        var constructor = type?.GetConstructor(BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic, [typeof(HttpProtocols)]);
        return type is null || constructor is null ? null : (type, constructor.Invoke([HttpProtocols.Http2]));
    }

    internal enum Verdict
    {
        Undecided,
        Http1,
        Http2,
        Close,
    }
}

/// <summary>
/// <c>timeout.idle</c> for an HTTP/2 connection. Kestrel restarts its keep-alive timer on every PING a client sends, so a
/// client pinging once per idle period would hold a connection (and a <c>maxConnections</c> slot) for ever without a
/// single request — on HTTP/1.1 the same costs a real, rate-limited request. The forward's handler counts the connection's
/// requests (<see cref="Begin"/>, <see cref="End"/>); with none open for <c>timeout.idle</c>, the connection is asked to
/// close (a graceful GOAWAY: a stream that starts meanwhile still finishes).
/// </summary>
internal sealed class Http2Activity : IDisposable
{
    private readonly ConnectionContext _connection;
    private readonly long _idleMs;
    private readonly ITimer _timer;
    private int _open;
    private long _lastEnd = Environment.TickCount64;

    public Http2Activity(ConnectionContext connection, TimeSpan idle)
    {
        _connection = connection;
        _idleMs = (long)idle.TotalMilliseconds;
        var period = TimeSpan.FromMilliseconds(Math.Clamp(_idleMs / 4, 100, 5_000));
        _timer = TimeProvider.System.CreateTimer(static state => ((Http2Activity)state!).Check(), this, period, period);
    }

    public void Begin() => Interlocked.Increment(ref _open);

    public void End()
    {
        Volatile.Write(ref _lastEnd, Environment.TickCount64);
        Interlocked.Decrement(ref _open);
    }

    private void Check()
    {
        if (Volatile.Read(ref _open) == 0 && Environment.TickCount64 - Volatile.Read(ref _lastEnd) >= _idleMs)
        {
            _timer.Dispose();
            _connection.Features.Get<IConnectionLifetimeNotificationFeature>()?.RequestClose();
        }
    }

    public void Dispose() => _timer.Dispose();
}

