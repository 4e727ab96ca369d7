using LLMProxy.Observability;
using Microsoft.AspNetCore.Connections;
using Microsoft.Extensions.Logging;
using Prometheus;

namespace LLMProxy.Hosting;

/// <summary>
/// <c>httpServer.forwards[].maxConnections</c>: a connection beyond the cap is closed as soon as it is accepted, before a
/// byte of it is read (Kestrel disposes a connection its middleware returns from: the client sees it closed, unanswered),
/// counted in <c>llmproxy_connections_rejected_total</c> and logged at most once per <see cref="LogInterval"/>.
/// Each refusal is one accept and one close driven by one client connect, so a flood costs no spinning.
/// A connection middleware rather than Kestrel's <c>MaxConcurrentConnections</c>, which does the same but logs a Warning
/// for every refused connection (a flood of lines under exactly that load) and counts them only in its own meter.
/// </summary>
internal sealed class ConnectionCap
{
    private static readonly TimeSpan LogInterval = TimeSpan.FromSeconds(10);
    private readonly int _max;
    private readonly string _forward;
    private readonly ILogger _logger;
    private readonly LogThrottle _throttle;
    private readonly Gauge.Child _open;
    private readonly Counter.Child _rejected;
    private int _count;

    public ConnectionCap(string forward, int max, ProxyMetrics metrics, TimeProvider time, ILogger logger)
    {
        _forward = forward;
        _max = max;
        _logger = logger;
        _throttle = new LogThrottle(time, LogInterval);
        _open = metrics.ClientConnections.WithLabels(forward);
        _rejected = metrics.ConnectionsRejected.WithLabels(forward);
    }

    /// <summary>For <c>ListenOptions.Use</c>.</summary>
    public ConnectionDelegate Wrap(ConnectionDelegate next) => connection => OnConnectionAsync(connection, next);

    private async Task OnConnectionAsync(ConnectionContext connection, ConnectionDelegate next)
    {
        if (Interlocked.Increment(ref _count) > _max)
        {
            Interlocked.Decrement(ref _count);
            _rejected.Inc();
            if (_throttle.TryEnter(out var refused))
            {
                Log.ConnectionsRefused(_logger, _forward, _max, refused);
            }
            return;
        }
        try
        {
            _open.Inc();
            await next(connection).ConfigureAwait(false);
        }
        finally
        {
            _open.Dec();
            Interlocked.Decrement(ref _count);
        }
    }
}
