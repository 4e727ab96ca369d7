using LLMProxy.Configuration;
using LLMProxy.Observability;
using LLMProxy.Resilience;
using Microsoft.Extensions.Logging;

namespace LLMProxy.Runtime;

/// <summary>The compiled configuration the hot path reads: built once, never parsed per request.</summary>
internal sealed class ProxyRuntime : IDisposable
{
    public ProxyRuntime(ProxyConfig config, ProxyMetrics metrics, TimeProvider time, ILogger logger)
    {
        Config = config;
        Metrics = metrics;
        Time = time;
        Upstreams = config.Upstreams.ToDictionary(u => u.Name, u => new UpstreamRuntime(u, time), StringComparer.Ordinal);
        Groups = config.UpstreamGroups.ToDictionary(g => g.Name, g => new GroupRuntime(g, Upstreams, metrics), StringComparer.Ordinal);
        Forwards = [.. config.HttpServer.Forwards.Select(f => new ForwardRuntime(f, Groups[f.DefaultGroup], time))];

        foreach (var upstream in Upstreams.Values)
        {
            if (upstream.Breaker is not { } breaker)
            {
                continue;
            }
            var name = upstream.Name;
            var gauge = metrics.BreakerState.WithLabels(name);
            gauge.Set((int)breaker.State);
            breaker.StateChanged += (from, to) =>
            {
                gauge.Set((int)to);
                metrics.BreakerStateChanges.WithLabels(name, StateLabel(from), StateLabel(to)).Inc();
                Log.BreakerStateChanged(logger, name, StateLabel(from), StateLabel(to));
            };
        }
    }

    public ProxyConfig Config { get; }
    public ProxyMetrics Metrics { get; }
    public TimeProvider Time { get; }
    public IReadOnlyDictionary<string, UpstreamRuntime> Upstreams { get; }
    public IReadOnlyDictionary<string, GroupRuntime> Groups { get; }
    public ForwardRuntime[] Forwards { get; }

    private int _activeRequests;
    private long _startedRequests;

    /// <summary>Requests in progress on every forward (the idle check of the memory trimmer).</summary>
    public int ActiveRequests => Volatile.Read(ref _activeRequests);

    /// <summary>Requests started since the process began.</summary>
    public long StartedRequests => Interlocked.Read(ref _startedRequests);

    public void RequestStarted()
    {
        Interlocked.Increment(ref _activeRequests);
        Interlocked.Increment(ref _startedRequests);
    }

    public void RequestEnded() => Interlocked.Decrement(ref _activeRequests);

    public static string StateLabel(CircuitState state) => state switch
    {
        CircuitState.Open => "open",
        CircuitState.HalfOpen => "half_open",
        _ => "closed",
    };

    public void Dispose()
    {
        foreach (var g in Groups.Values)
        {
            g.Dispose();
        }
        foreach (var f in Forwards)
        {
            f.Dispose();
        }
    }
}
