using System.Net.Sockets;
using Microsoft.AspNetCore.Connections;
using LLMProxy.Observability;
using Microsoft.Extensions.Logging;
using Prometheus;

namespace LLMProxy.Hosting;

/// <summary>Which listeners a connection came in on: the forwards (any client) or the admin port (operators, scrapers).</summary>
internal enum ListenerKind
{
    Forward,
    Admin,
}

/// <summary>
/// How full the process's descriptor table may get through accepted connections. Out of descriptors the .NET runtime
/// aborts the process as soon as it must start a thread (a new thread opens a pipe as it starts; docs/RELIABILITY.md),
/// and a flood of connections is exactly what makes the thread pool add one. So the table must never fill, and accepting
/// is the one place where a client can fill it.
/// <para>The rule is on descriptor numbers, which cost nothing to read: no forward connection is kept on a descriptor
/// numbered at or above the ceiling. Linux gives a new descriptor the lowest free number, so an accept lands there only
/// when every descriptor below is taken, and whatever the churn (connections closing leave holes that later accepts fill
/// first) the numbers from the ceiling up are left to the pools, admin and the runtime.</para>
/// <para>A forward connection numbered at or above <see cref="Forward"/> is closed: from that ceiling up there is room for
/// every upstream connection the pools may still open (<c>maxPerHost</c> per distinct host and group), for
/// <see cref="AdminRoom"/> admin connections and for <see cref="RuntimeRoom"/> descriptors of the runtime's own. Those
/// are not regions: the pools' connections take the lowest free numbers too, so they land just above the ceiling. The
/// admin room is therefore a count — while fewer than <see cref="AdminRoom"/> admin connections are open, a new one may
/// go up to the runtime's room (<see cref="Admin"/>); beyond that it is held to the forwards' ceiling — so a scrape gets
/// in while a request flood fills the pools, and no admin flood can take more than its 32 from the pools or the runtime.
/// The room kept is at most half the limit: a config whose pools alone would take more (the start-up warning names
/// it) still serves half the table's worth of clients, each of which holds at most one upstream connection at a time
/// (forwards speak HTTP/1.1).</para>
/// </summary>
internal sealed class DescriptorCeiling
{
    /// <summary>Descriptors no connection may take: the runtime's threads, files, the Redis connection.</summary>
    public const int RuntimeRoom = 64;
    /// <summary>Descriptors the forwards leave to admin connections (metrics scrapes, the status page) beyond the runtime's.</summary>
    public const int AdminRoom = 32;

    private readonly long? _limit;
    private readonly Func<long> _upstreamConnections;

    /// <param name="limit">The process's open-file limit; null (not Linux, unlimited) = no ceiling.</param>
    /// <param name="upstreamConnections">The most upstream connections the pools of the config now in force can hold
    /// (computed once per config, <see cref="Runtime.ProxyRuntime.UpstreamConnectionCap"/>).</param>
    public DescriptorCeiling(long? limit, Func<long> upstreamConnections)
    {
        _limit = limit;
        _upstreamConnections = upstreamConnections;
    }

    public long Forward => _limit is { } limit ? ForwardCeiling(limit, _upstreamConnections()) : long.MaxValue;

    /// <summary>The ceiling of the first <see cref="AdminRoom"/> admin connections: only the runtime's room is kept.</summary>
    public long Admin => _limit is { } limit ? limit - RuntimeRoom : long.MaxValue;

    /// <param name="adminOpen">Admin connections open now (<see cref="AcceptGuard.CountAdmin"/>).</param>
    public long For(ListenerKind kind, int adminOpen) =>
        kind == ListenerKind.Admin && adminOpen < AdminRoom ? Admin : Forward;

    public static long ForwardCeiling(long limit, long upstreamConnections) =>
        limit - Math.Min(RuntimeRoom + AdminRoom + upstreamConnections, limit / 2);
}

/// <summary>
/// What every listener of one proxy does when descriptors run short: sheds connections accepted above the
/// <see cref="DescriptorCeiling"/> (<c>llmproxy_connections_shed_total</c>) and pauses accepting when accept itself fails
/// for want of a descriptor (<c>llmproxy_accept_pauses_total</c>); each logged at most every 10 s.
/// </summary>
internal sealed class AcceptGuard(DescriptorCeiling ceiling, ProxyMetrics metrics, ILogger logger)
{
    public static readonly TimeSpan Pause = TimeSpan.FromMilliseconds(100);
    private static readonly TimeSpan LogInterval = TimeSpan.FromSeconds(10);
    private readonly Counter _pauses = metrics.AcceptPauses;
    private readonly Counter.Child _shedForward = metrics.ConnectionsShed.WithLabels("forward");
    private readonly Counter.Child _shedAdmin = metrics.ConnectionsShed.WithLabels("admin");
    private readonly LogThrottle _pauseLog = new(TimeProvider.System, LogInterval);
    private readonly LogThrottle _shedLog = new(TimeProvider.System, LogInterval);
    private int _adminOpen;

    /// <summary>Admin connections open now (the admin room's count).</summary>
    public int AdminOpen => Volatile.Read(ref _adminOpen);

    /// <summary>For the admin listener's <c>ListenOptions.Use</c>: an admin connection is counted as it is accepted
    /// (<see cref="ShedIfCrowded"/>: a burst is counted before Kestrel runs any of it) and uncounted here as it ends.</summary>
    public ConnectionDelegate CountAdmin(ConnectionDelegate next) => async connection =>
    {
        try
        {
            await next(connection).ConfigureAwait(false);
        }
        finally
        {
            Interlocked.Decrement(ref _adminOpen);
        }
    };

    /// <summary>Closes <paramref name="accepted"/> (the client sees it closed, unanswered) when its descriptor number is
    /// at or above the ceiling of its listener; true when it did. A kept admin connection is counted.</summary>
    public bool ShedIfCrowded(Socket accepted, ListenerKind kind)
    {
        var max = ceiling.For(kind, AdminOpen);
        var descriptor = max == long.MaxValue ? 0 : accepted.Handle.ToInt64();
        if (descriptor < max)
        {
            if (kind == ListenerKind.Admin)
            {
                Interlocked.Increment(ref _adminOpen);
            }
            return false;
        }
        accepted.Dispose();
        (kind == ListenerKind.Admin ? _shedAdmin : _shedForward).Inc();
        if (_shedLog.TryEnter(out var shed))
        {
            Log.ConnectionsShed(logger, kind == ListenerKind.Admin ? "admin" : "forward", descriptor, max, shed);
        }
        return true;
    }

    public void Paused(SocketError error)
    {
        _pauses.Inc();
        if (_pauseLog.TryEnter(out var pauses))
        {
            Log.AcceptPaused(logger, error.ToString(), (long)Pause.TotalMilliseconds, pauses);
        }
    }
}
