using LLMProxy.Configuration;
using LLMProxy.Observability;
using Microsoft.Extensions.Logging;
using StackExchange.Redis;

namespace LLMProxy.Cluster;

/// <summary>
/// The connection to the Redis that several instances share (SPEC §17), and whether it is usable right now.
/// <para>Degrade, never drop: a call that fails or takes longer than <c>cluster.redis.timeout</c> marks Redis down at
/// once — the caller decides on local state, which is kept up to date all the time, so falling back costs nothing —
/// and from then on no request waits for Redis: every shared operation is skipped (and counted) until a background
/// probe, one PING a second, gets an answer in time. One log line per transition, never per request.</para>
/// <para>A command Redis answers with an error (WRONGTYPE from a foreign key under the prefix, OOM under
/// <c>maxmemory</c>) is not an outage: that one call is decided locally and counted, and logged at most once per
/// <see cref="ErrorLogInterval"/>; the others still go to Redis.</para>
/// <para>StackExchange.Redis reconnects by itself (<c>AbortOnConnectFail=false</c>); commands issued while it is
/// disconnected fail at once (<see cref="BacklogPolicy.FailFast"/>) instead of queueing behind the outage.</para>
/// </summary>
internal sealed class RedisCluster : IDisposable
{
    /// <summary>Between two probes (PING), up or down.</summary>
    public static readonly TimeSpan ProbeInterval = TimeSpan.FromSeconds(1);

    /// <summary>At most one log line per this interval for commands Redis answered with an error.</summary>
    public static readonly TimeSpan ErrorLogInterval = TimeSpan.FromMinutes(1);

    private readonly ConfigurationOptions _options;
    private readonly TimeSpan _timeout;
    private readonly ILogger _logger;
    private readonly ClusterMetrics _metrics;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _probe;
    private readonly string _shown;
    private readonly LogThrottle _errors;
    private ConnectionMultiplexer? _connection;
    private IDatabase? _database;
    private int _state; // Unknown until the first probe, then Up or Down
    private int _wasEverUp;
    private const int Unknown = 0, UpState = 1, DownState = 2;

    public RedisCluster(RedisConfig config, ProxyMetrics metrics, ILogger logger, TimeProvider? time = null)
    {
        ArgumentNullException.ThrowIfNull(config);
        if (!RedisUrl.TryParse(config.Url, out var options, out var error))
        {
            throw new ArgumentException("cluster.redis.url " + error, nameof(config));
        }
        _options = options!;
        _options.AbortOnConnectFail = false;
        _options.ConnectRetry = 3;
        _options.ConnectTimeout = 2000;
        // Commands that outlive the request's timeout are abandoned by the caller; this only bounds their bookkeeping.
        _options.AsyncTimeout = Math.Max(1000, config.Timeout * 4);
        _options.SyncTimeout = Math.Max(1000, config.Timeout * 4);
        _options.BacklogPolicy = BacklogPolicy.FailFast;
        _options.ReconnectRetryPolicy = new LinearRetry(1000);
        _options.ClientName ??= "llmproxy";
        _timeout = TimeSpan.FromMilliseconds(config.Timeout);
        Prefix = config.Prefix;
        _logger = logger;
        _metrics = new ClusterMetrics(metrics);
        _shown = RedisUrl.Describe(config.Url);
        _errors = new LogThrottle(time ?? TimeProvider.System, ErrorLogInterval);
        _metrics.Up.Set(0);
        _probe = Task.Run(() => ProbeLoopAsync(_stop.Token));
    }

    /// <summary>Key prefix (<c>cluster.redis.prefix</c>).</summary>
    public string Prefix { get; }

    /// <summary>Where the cluster's own lines go (and those about state learned from it).</summary>
    public ILogger Logger => _logger;

    /// <summary>Raised when Redis answers again after being down: what this instance learned alone meanwhile
    /// (cool-downs, disabled keys) is written back, so an emptied or restarted Redis learns it too.</summary>
    public event Action? Resumed;

    /// <summary>Raised after every probe that found Redis up (once a second), off the request path: where state that
    /// a request never asks about — a key another instance enabled again — is read back.</summary>
    public event Func<Task>? Tick;

    /// <summary>Whether shared operations go to Redis now (false until the first probe answered).</summary>
    public bool IsUp => Volatile.Read(ref _state) == UpState;

    /// <summary>Runs <paramref name="script"/> and waits at most the configured timeout. Null — decide locally — when
    /// Redis is down, failed or was too slow (which marks it down until the probe finds it back), or answered with an
    /// error (which does not).</summary>
    /// <remarks>Whatever goes wrong in the client is caught here: no request fails because Redis did.</remarks>
    public async ValueTask<RedisResult?> EvaluateAsync(string script, RedisKey[] keys, RedisValue[] values)
    {
        if (Volatile.Read(ref _state) != UpState || _database is not { } db)
        {
            _metrics.Fallbacks.Inc();
            return null;
        }
        Task<RedisResult>? call = null;
        try
        {
            call = db.ScriptEvaluateAsync(script, keys, values);
            return await call.WaitAsync(_timeout).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            Observe(call);
            Failed(ex);
            _metrics.Fallbacks.Inc();
            return null;
        }
    }

    /// <summary>Reads hash fields, waiting at most the timeout; a field absent is a null value. Not answered (null
    /// values) when Redis is down or slow.</summary>
    public async ValueTask<(bool Answered, RedisValue[]? Values)> HashGetAsync(RedisKey key, RedisValue[] fields)
    {
        if (Volatile.Read(ref _state) != UpState || _database is not { } db)
        {
            return (false, null);
        }
        Task<RedisValue[]>? call = null;
        try
        {
            call = db.HashGetAsync(key, fields);
            return (true, await call.WaitAsync(_timeout).ConfigureAwait(false));
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            Observe(call);
            Failed(ex);
            return (false, null);
        }
    }

    /// <summary>Reads one string key, waiting at most the timeout; a null value when absent. Not answered when Redis
    /// is down or slow.</summary>
    public async ValueTask<(bool Answered, RedisValue Value)> StringGetAsync(RedisKey key)
    {
        if (Volatile.Read(ref _state) != UpState || _database is not { } db)
        {
            return (false, RedisValue.Null);
        }
        Task<RedisValue>? call = null;
        try
        {
            call = db.StringGetAsync(key);
            return (true, await call.WaitAsync(_timeout).ConfigureAwait(false));
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            Observe(call);
            Failed(ex);
            return (false, RedisValue.Null);
        }
    }

    /// <summary>Sends <paramref name="script"/> without waiting for (or reading) its answer: settles and the writes of
    /// cool-downs, disabled keys and headroom. Skipped while Redis is down (the local state already has it).</summary>
    public void Send(string script, RedisKey[] keys, RedisValue[] values)
    {
        if (Volatile.Read(ref _state) != UpState || _database is not { } db)
        {
            _metrics.Fallbacks.Inc();
            return;
        }
        try
        {
            db.ScriptEvaluate(script, keys, values, CommandFlags.FireAndForget);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            Failed(ex);
            _metrics.Fallbacks.Inc();
        }
    }

    // Redis answered, with an error: this call only falls back. No answer in time, or no connection: Redis is down.
    private void Failed(Exception ex)
    {
        if (ex is RedisServerException)
        {
            if (_errors.TryEnter(out var count))
            {
                Log.ClusterRedisError(_logger, _shown, Reason(ex), count);
            }
        }
        else
        {
            Down(ex is TimeoutException ? $"no answer within {(long)_timeout.TotalMilliseconds} ms" : Reason(ex));
        }
    }

    private static string Reason(Exception ex) => ex switch
    {
        RedisConnectionException c => "connection " + c.FailureType.ToString(),
        RedisTimeoutException => "timeout",
        RedisServerException s => "server error " + FirstWord(s.Message),
        _ => ex.GetType().Name,
    };

    // A server error's first word (NOSCRIPT, READONLY, NOPERM…): never the rest, which could echo arguments.
    private static string FirstWord(string message)
    {
        var space = message.IndexOf(' ', StringComparison.Ordinal);
        return space < 0 ? message : message[..space];
    }

    // An abandoned call may still fault later: observe it so it is no unobserved task exception.
    private static void Observe(Task? call) =>
        call?.ContinueWith(static t => _ = t.Exception, CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted | TaskContinuationOptions.ExecuteSynchronously,
            TaskScheduler.Default);

    private void Down(string reason)
    {
        if (Interlocked.Exchange(ref _state, DownState) != DownState)
        {
            _metrics.Up.Set(0);
            Log.ClusterRedisDown(_logger, _shown, reason);
        }
    }

    private void Up()
    {
        if (Interlocked.Exchange(ref _state, UpState) != UpState)
        {
            _metrics.Up.Set(1);
            var first = Interlocked.Exchange(ref _wasEverUp, 1) == 0;
            Log.ClusterRedisUp(_logger, _shown, first ? "connected" : "back: sharing state again");
            if (!first)
            {
                Resumed?.Invoke();
            }
        }
    }

    private async Task ProbeLoopAsync(CancellationToken stop)
    {
        try
        {
            try
            {
                _connection = await ConnectionMultiplexer.ConnectAsync(_options).ConfigureAwait(false);
                _database = _connection.GetDatabase();
            }
            catch (Exception ex) when (ex is RedisException or ArgumentException or InvalidOperationException)
            {
                Log.ClusterRedisDown(_logger, _shown, "cannot connect: " + Reason(ex));
                return;
            }
            if (stop.IsCancellationRequested)
            {
                return;
            }
            using var timer = new PeriodicTimer(ProbeInterval);
            do
            {
                Task<TimeSpan>? ping = null;
                try
                {
                    ping = _database.PingAsync();
                    await ping.WaitAsync(_timeout, stop).ConfigureAwait(false);
                    Up();
                }
                catch (Exception ex) when (ex is not OperationCanceledException and not OutOfMemoryException)
                {
                    Observe(ping);
                    Down(ex is TimeoutException ? "probe unanswered" : Reason(ex));
                }
                if (IsUp && Tick is { } tick)
                {
                    try
                    {
                        // Its own Redis calls degrade like any other; a slow round is simply cut.
                        await tick().WaitAsync(ProbeInterval, stop).ConfigureAwait(false);
                    }
                    catch (TimeoutException)
                    {
                    }
                }
            }
            while (await timer.WaitForNextTickAsync(stop).ConfigureAwait(false));
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested)
        {
            // Shutting down.
        }
    }

    public void Dispose()
    {
        _stop.Cancel();
        try
        {
            _probe.Wait(TimeSpan.FromSeconds(2));
        }
        catch (AggregateException)
        {
            // The loop's own failures were logged.
        }
        _connection?.Dispose();
        _stop.Dispose();
    }
}

/// <summary>The cluster's metric families; created only when <c>cluster.redis</c> is set, so a proxy without one shows
/// none.</summary>
internal sealed class ClusterMetrics(ProxyMetrics metrics)
{
    public Prometheus.Gauge Up { get; } = Prometheus.Metrics.WithCustomRegistry(metrics.Registry).CreateGauge("llmproxy_cluster_redis_up",
        "1 while this instance shares limits, cool-downs, headroom and disabled keys through Redis; 0 while it decides on its own state (Redis down, slow or not reached yet).");
    public Prometheus.Counter Fallbacks { get; } = Prometheus.Metrics.WithCustomRegistry(metrics.Registry).CreateCounter("llmproxy_cluster_fallbacks_total",
        "Shared operations (a request's admission, a settle, a cool-down, headroom or key-health write) decided or kept on local state only because Redis was down, slower than cluster.redis.timeout, or answered that command with an error.");
}
