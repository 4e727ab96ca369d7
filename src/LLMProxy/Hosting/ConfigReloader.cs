using LLMProxy.Configuration;
using LLMProxy.Observability;
using LLMProxy.Runtime;
using Microsoft.Extensions.Logging;

namespace LLMProxy.Hosting;

/// <summary>What a reload did: applied (or overtaken by a reload asked for later, which applied the file as it is now), or
/// why not (every error, one per line).</summary>
internal sealed record ReloadOutcome(bool Applied, IReadOnlyList<string> Errors);

/// <summary>
/// SIGHUP / <c>POST /api/v1/reload</c>: load and validate the file; if valid, swap the compiled runtime in
/// atomically. Requests in flight finish on the snapshot they started with; whatever did not change keeps its state
/// (see <see cref="ProxyRuntime"/>'s constructor). An invalid file, or one that changes a listener
/// (which needs a restart), changes nothing and every reason is logged. Overlapping reloads end with the file as the last
/// one asked for read it, whatever order their reads finish in.
/// </summary>
internal sealed class ConfigReloader(RuntimeHolder holder, Func<ConfigLoadResult>? source, ILogger logger)
{
    private static readonly TimeSpan RetireCheck = TimeSpan.FromSeconds(1);
    private readonly Lock _lock = new();
    // Reloads in the order they were asked for: each takes a ticket before it reads the file; the ticket of the last one
    // swapped in is kept under the lock.
    private long _asked;
    private long _applied;

    /// <summary>False when the proxy was not started from a file (then the admin API has no reload route).</summary>
    public bool Available => source is not null;

    public ReloadOutcome Reload()
    {
        if (source is null)
        {
            return Reject(["reload is not available: this proxy was not started from a config file"]);
        }
        // Read outside the lock (a slow or stuck read holds no other reload up), so reads can finish out of order: one asked
        // for before a reload already applied read the file no later than that one did, and must not undo it.
        var ticket = Interlocked.Increment(ref _asked);
        var result = source();
        lock (_lock)
        {
            if (ticket < _applied)
            {
                Log.ReloadSuperseded(logger);
                return new ReloadOutcome(true, []);
            }
            if (!result.Success)
            {
                return Reject([.. result.Errors.Select(e => e.ToString())]);
            }
            var current = holder.Current;
            // Every change that needs a restart is named at once, not one per attempt.
            var restartChanges = ListenerChanges(current.Config.HttpServer, result.Config!.HttpServer);
            if (current.Config.Cluster != result.Config!.Cluster)
            {
                restartChanges.Add("cluster: the shared state's settings changed; restart to apply");
            }
            if (restartChanges.Count > 0)
            {
                return Reject(restartChanges);
            }
            var next = new ProxyRuntime(result.Config!, current.Metrics, current.Time, logger, previous: current, cluster: current.Cluster);
            _applied = ticket;
            Retire(holder.Swap(next));
            next.RemoveStaleMetricSeries();
            Log.Reloaded(logger, next.Config.Upstreams.Count, next.Config.UpstreamGroups.Count);
            return new ReloadOutcome(true, []);
        }
    }

    private ReloadOutcome Reject(IReadOnlyList<string> errors)
    {
        foreach (var error in errors)
        {
            Log.ReloadRejected(logger, error);
        }
        return new ReloadOutcome(false, errors);
    }

    /// <summary>
    /// Once the replaced runtime's last request ended, it releases its connection pools and client buckets (those the
    /// successor kept stay open: it holds its own reference) and the series its last requests may have recreated for
    /// what the reload removed are dropped again — under the reload lock, so they are judged against the current config.
    /// </summary>
    private void Retire(ProxyRuntime old) => _ = Task.Run(async () =>
    {
        do
        {
            await Task.Delay(RetireCheck, old.Time).ConfigureAwait(false);
        }
        while (old.ActiveRequests > 0);
        lock (_lock)
        {
            holder.Current.RemoveStaleMetricSeries();
        }
        old.Dispose();
        Log.Retired(logger);
    });

    /// <summary>Listener settings and the shutdown timeout are bound into Kestrel at start; changing them needs a restart.</summary>
    private static List<string> ListenerChanges(HttpServerConfig now, HttpServerConfig next)
    {
        var changes = new List<string>();
        if (now.Forwards.Count != next.Forwards.Count)
        {
            changes.Add($"httpServer.forwards: the number of forwards changed ({now.Forwards.Count} -> {next.Forwards.Count}); restart to apply");
        }
        for (var i = 0; i < Math.Min(now.Forwards.Count, next.Forwards.Count); i++)
        {
            var (a, b) = (now.Forwards[i], next.Forwards[i]);
            if (a.Name != b.Name || a.Port != b.Port || a.Address != b.Address || a.Timeout != b.Timeout || a.MaxRequestBodySize != b.MaxRequestBodySize
                || a.MaxConnections != b.MaxConnections)
            {
                changes.Add($"httpServer.forwards[{i}]: name, address, port, timeout, maxRequestBodySize or maxConnections changed; restart to apply");
            }
        }
        if (now.Admin.Port != next.Admin.Port || now.Admin.Address != next.Admin.Address || now.Admin.Timeout != next.Admin.Timeout)
        {
            changes.Add("httpServer.admin: address, port or timeout changed; restart to apply");
        }
        // The drain SIGTERM allows, and each listener's host cap on it, are fixed at start.
        if (now.ShutdownTimeout != next.ShutdownTimeout)
        {
            changes.Add($"httpServer.shutdownTimeout: changed ({now.ShutdownTimeout} -> {next.ShutdownTimeout} ms); restart to apply");
        }
        return changes;
    }
}
