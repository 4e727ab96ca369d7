using System.Net;
using LLMProxy.Admin;
using LLMProxy.Configuration;
using LLMProxy.Forwarding;
using LLMProxy.Observability;
using LLMProxy.Runtime;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.AspNetCore.Server.Kestrel.Transport.Sockets;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Yarp.ReverseProxy.Forwarder;

namespace LLMProxy.Hosting;

/// <summary>Options that change how a config is hosted, not what it means.</summary>
internal sealed record ProxyHostOptions
{
    /// <summary>Bind every listener to port 0 (tests, demo): the actual ports are reported after start.</summary>
    public bool EphemeralPorts { get; init; }
    public TimeProvider Time { get; init; } = TimeProvider.System;
    /// <summary>Register process/runtime collectors on the metrics registry.</summary>
    public bool ProcessMetrics { get; init; } = true;
    /// <summary>Where SIGHUP / <c>POST /api/v1/reload</c> read the config from; null = reload unavailable.</summary>
    public Func<ConfigLoadResult>? ReloadSource { get; init; }
}

/// <summary>A listener could not be bound (exit code 1).</summary>
internal sealed class ListenerBindException(string message, Exception inner) : Exception(message, inner);

/// <summary>
/// Runs one config: a Kestrel server per forward and one for admin, sharing one compiled runtime.
/// Separate servers keep each forward's limits (timeouts, body size) its own.
/// </summary>
internal sealed class ProxyHost : IAsyncDisposable
{
    private readonly List<WebApplication> _apps;
    private readonly ILogger _logger;

    private readonly IdleMemoryTrimmer _trimmer;

    private readonly RuntimeHolder _holder;
    private readonly ConfigReloader _reloader;

    private ProxyHost(RuntimeHolder holder, ConfigReloader reloader, List<WebApplication> apps, Dictionary<string, int> forwardPorts,
        int adminPort, ILogger logger, IdleMemoryTrimmer trimmer, AcceptGuard acceptGuard)
    {
        AcceptGuard = acceptGuard;
        _trimmer = trimmer;
        _holder = holder;
        _reloader = reloader;
        _apps = apps;
        ForwardPorts = forwardPorts;
        AdminPort = adminPort;
        _logger = logger;
    }

    /// <summary>The listeners' descriptor guard (tests read its admin count).</summary>
    internal AcceptGuard AcceptGuard { get; }

    /// <summary>The configuration in force now (it changes on reload).</summary>
    public ProxyRuntime Runtime => _holder.Current;

    /// <summary>Loads the config again from <see cref="ProxyHostOptions.ReloadSource"/> and swaps it in if valid.</summary>
    public ReloadOutcome Reload() => _reloader.Reload();
    /// <summary>Actual bound port per forward name.</summary>
    public IReadOnlyDictionary<string, int> ForwardPorts { get; }
    public int AdminPort { get; }

    public static async Task<ProxyHost> StartAsync(ProxyConfig config, ILoggerFactory loggerFactory, ProxyHostOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        options ??= new ProxyHostOptions();
        var logger = loggerFactory.CreateLogger("LLMProxy");
        var metrics = new ProxyMetrics(options.ProcessMetrics);
        // SPEC §17: one connection for the process, kept across reloads; requests decide locally until Redis answers.
        var cluster = config.Cluster?.Redis is { } redis ? new Cluster.RedisCluster(redis, metrics, logger, options.Time) : null;
        var runtime = new ProxyRuntime(config, metrics, options.Time, logger, cluster: cluster);
        var holder = new RuntimeHolder(runtime);
        if (cluster is not null)
        {
            WireCluster(cluster, holder, options.Time, logger);
        }
        var reloader = new ConfigReloader(holder, options.ReloadSource, logger);
        Log.Starting(logger, Cli.VersionInfo.Version, config.HttpServer.Forwards.Count, config.UpstreamGroups.Count, config.Upstreams.Count);
        var openFileLimit = FileDescriptorBudget.ReadOpenFileLimit();
        FileDescriptorBudget.Check(config, openFileLimit, logger);
        CleartextHttp2.WarnIfUnavailable(logger);
        var acceptGuard = new AcceptGuard(new DescriptorCeiling(openFileLimit, () => holder.Current.UpstreamConnectionCap), metrics, logger);

        var apps = new List<WebApplication>();
        var forwardPorts = new Dictionary<string, int>(StringComparer.Ordinal);
        var adminPort = 0;
        // SPEC §8: bind every listener, then say ready — a listener that fails to bind must not follow a ready line.
        var ready = new List<(string Kind, string Name, string Endpoint)>();
        try
        {
            for (var index = 0; index < runtime.Forwards.Length; index++)
            {
                var forward = runtime.Forwards[index];
                var c = forward.Config;
                // The body limit is enforced by the forward itself (ClientStreams), so that after its 413 Kestrel can still
                // drain what the client keeps sending, and the client reads the answer instead of a reset.
                var cap = new ConnectionCap(c.Name, c.MaxConnections, metrics, options.Time, logger);
                var app = BuildApp(loggerFactory, c.Address, options.EphemeralPorts ? 0 : c.Port, c.Timeout, maxBody: null,
                    config.HttpServer.ShutdownTimeout, inlineScheduling: true, acceptGuard, ListenerKind.Forward, cap,
                    new CleartextHttp2(TimeSpan.FromMilliseconds(c.Timeout.Idle), countsRequests: true));
                var handler = new ForwardHandler(holder, index, app.Services.GetRequiredService<IHttpForwarder>(), options.Time,
                    loggerFactory.CreateLogger("LLMProxy.Access"));
                app.Run(handler.HandleAsync);
                var port = await StartAppAsync(app, c.Address, c.Port, cancellationToken).ConfigureAwait(false);
                apps.Add(app);
                forwardPorts[forward.Name] = port;
                ready.Add(("forward", forward.Name, FormatEndpoint(c.Address, port)));
            }

            var a = config.HttpServer.Admin;
            var admin = BuildApp(loggerFactory, a.Address, options.EphemeralPorts ? 0 : a.Port, a.Timeout, 1024 * 1024,
                config.HttpServer.ShutdownTimeout, inlineScheduling: false, acceptGuard, ListenerKind.Admin,
                h2c: new CleartextHttp2(TimeSpan.FromMilliseconds(a.Timeout.Idle), countsRequests: false));
            new AdminEndpoints(holder, reloader, loggerFactory.CreateLogger("LLMProxy.Admin"), options.Time).Map(admin);
            adminPort = await StartAppAsync(admin, a.Address, a.Port, cancellationToken).ConfigureAwait(false);
            apps.Add(admin);
            ready.Add(("admin", "admin", FormatEndpoint(a.Address, adminPort)));
        }
        catch
        {
            foreach (var app in apps)
            {
                await app.StopAsync(CancellationToken.None).ConfigureAwait(false);
                await app.DisposeAsync().ConfigureAwait(false);
            }
            runtime.Dispose();
            cluster?.Dispose();
            throw;
        }
        foreach (var (kind, name, endpoint) in ready)
        {
            Log.Listening(logger, kind, name, endpoint);
        }
        var trimmer = new IdleMemoryTrimmer(() => holder.Current.ActiveRequests, () => holder.Current.StartedRequests, options.Time);
        return new ProxyHost(holder, reloader, apps, forwardPorts, adminPort, logger, trimmer, acceptGuard);
    }

    /// <summary>SPEC §17, off the request path: after an outage, what this instance learned alone is written back; once
    /// a second, keys disabled here are checked against the cluster, so a key enabled through another instance (its
    /// trial passed, or its operator enabled it) is enabled here too — and only then (SPEC §13.4); and upstreams held back
    /// here by a cool-down, a shared-budget block or learned headroom are checked for an operator's reset elsewhere, which
    /// ends them here too.</summary>
    private static void WireCluster(Cluster.RedisCluster cluster, RuntimeHolder holder, TimeProvider time, ILogger logger)
    {
        cluster.Resumed += () =>
        {
            var now = time.GetUtcNow();
            foreach (var upstream in holder.Current.Upstreams.Values)
            {
                upstream.Shared?.Republish(upstream, now);
            }
        };
        cluster.Tick += async () =>
        {
            foreach (var upstream in holder.Current.Upstreams.Values)
            {
                if (upstream.Shared is not { } shared)
                {
                    continue;
                }
                if (upstream.Disabled is { } disabled
                    && await shared.EnabledElsewhereAsync(disabled).ConfigureAwait(false)
                    && upstream.AdoptEnabled(disabled))
                {
                    Log.KeyEnabled(logger, upstream.Name);
                }
                if (!upstream.HeldByResettable)
                {
                    shared.NotHeld();
                }
                else if (await shared.ResetElsewhereAsync().ConfigureAwait(false))
                {
                    upstream.AdoptReset();
                    Log.UpstreamResetElsewhere(logger, upstream.Name);
                }
            }
        };
    }

    private static string FormatEndpoint(string address, int port) =>
        IPAddress.TryParse(address, out var ip) && ip.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6
            ? $"[{address}]:{port}"
            : $"{address}:{port}";

    /// <summary>Concurrent streams per HTTP/2 connection (Kestrel's default).</summary>
    internal const int Http2Streams = 100;
    /// <summary>An HTTP/2 stream's receive window: 128 KiB, so the connection's window for all of them is 12.5 MiB.</summary>
    internal const int Http2StreamWindow = 128 * 1024;

    private static WebApplication BuildApp(ILoggerFactory loggerFactory, string address, int port, ServerTimeoutConfig timeouts,
        long? maxBody, int shutdownTimeoutMs, bool inlineScheduling, AcceptGuard acceptGuard, ListenerKind kind, ConnectionCap? cap = null,
        CleartextHttp2? h2c = null)
    {
        var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions());
        builder.Services.AddSingleton(loggerFactory);
        builder.Services.AddSingleton(typeof(ILogger<>), typeof(Logger<>));
        builder.Services.AddSingleton<IHostLifetime, NoopLifetime>();
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromMilliseconds(shutdownTimeoutMs));
        builder.Services.AddHttpForwarder();
        builder.Services.AddRoutingCore();
        builder.WebHost.UseKestrelCore();
        // Kestrel's socket transport, but keeping descriptors in reserve and pausing instead of spinning when the process
        // is out of them anyway.
        // Forward connections run the (fully asynchronous) proxy pipeline on the socket's I/O thread rather than
        // hopping to the thread pool per read: ~15 % less CPU per request (bench/RESULTS.md). Admin keeps the
        // default, so a slow /metrics scrape never sits on an I/O thread.
        builder.Services.RemoveAll<IConnectionListenerFactory>();
        builder.Services.AddSingleton<IConnectionListenerFactory>(new PatientSocketTransport(
            new SocketConnectionFactoryOptions { UnsafePreferInlineScheduling = inlineScheduling }, loggerFactory, acceptGuard, kind));
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.AddServerHeader = false;
            var ip = address == "localhost" ? IPAddress.Loopback : IPAddress.Parse(address);
            // Cleartext listeners. Declared HTTP/1.1 (an endpoint declared for both would make Kestrel warn that h2c is
            // off, and then pick HTTP/1.1 anyway); a forward's connections that open with the HTTP/2 preface are
            // switched to HTTP/2 one by one (CleartextHttp2), on admin as on forwards.
            k.Listen(ip, port, listen =>
            {
                listen.Protocols = HttpProtocols.Http1;
                // Outermost: an admin connection counted at accept is uncounted however it ends — also when the h2c
                // check closes it before Kestrel's HTTP middleware ever runs (idle, or shutdown).
                if (kind == ListenerKind.Admin)
                {
                    listen.Use(acceptGuard.CountAdmin);
                }
                if (cap is not null)
                {
                    listen.Use(cap.Wrap);
                }
                if (h2c is not null)
                {
                    listen.Use(h2c.Wrap);
                }
            });
            // HTTP/2 flow control: a stream whose body nobody reads yet (a request waiting for an upstream connection,
            // a body streamed to a busy upstream) holds its whole stream window. Kestrel's defaults (768 KB per stream,
            // 1 MB per connection) let one such stream stop the uploads of every other stream on the connection until
            // their read timeout answered them 408; here the connection's window covers every stream's at once, as
            // separate HTTP/1.1 connections would.
            k.Limits.Http2.MaxStreamsPerConnection = Http2Streams;
            k.Limits.Http2.InitialStreamWindowSize = Http2StreamWindow;
            k.Limits.Http2.InitialConnectionWindowSize = Http2Streams * Http2StreamWindow;
            k.Limits.MaxRequestBodySize = maxBody;
            k.Limits.KeepAliveTimeout = TimeSpan.FromMilliseconds(timeouts.Idle);
            k.Limits.RequestHeadersTimeout = TimeSpan.FromMilliseconds(timeouts.Read);
            // A client must keep sending its body at a minimal rate, and keep reading ours (Kestrel needs a grace
            // period above one second). These rates average over the whole body, so they catch a trickle; a client
            // that stops altogether is cut by ClientStreams after timeout.read / timeout.write without progress.
            k.Limits.MinRequestBodyDataRate = new MinDataRate(240, TimeSpan.FromMilliseconds(Math.Max(1500, timeouts.Read)));
            k.Limits.MinResponseDataRate = new MinDataRate(1, TimeSpan.FromMilliseconds(Math.Max(1500, timeouts.Write)));
        });
        return builder.Build();
    }

    private static async Task<int> StartAppAsync(WebApplication app, string address, int configuredPort, CancellationToken cancellationToken)
    {
        try
        {
            await app.StartAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is IOException or System.Net.Sockets.SocketException or InvalidOperationException or UnauthorizedAccessException)
        {
            await app.DisposeAsync().ConfigureAwait(false);
            throw new ListenerBindException($"cannot listen on {FormatEndpoint(address, configuredPort)}: {ex.Message}", ex);
        }
        var addresses = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses;
        var first = addresses.First();
        return new Uri(first.Replace("*", "localhost", StringComparison.Ordinal)).Port;
    }

    /// <summary>Stops accepting, lets in-flight requests and streams finish for up to <paramref name="drain"/>, then aborts the rest.</summary>
    public async Task StopAsync(TimeSpan drain)
    {
        Log.ShuttingDown(_logger, (long)drain.TotalMilliseconds);
        using var cts = new CancellationTokenSource(drain);
        await Task.WhenAll(_apps.Select(a => a.StopAsync(cts.Token))).ConfigureAwait(false);
        Log.Stopped(_logger);
    }

    public async ValueTask DisposeAsync()
    {
        _trimmer.Dispose();
        foreach (var app in _apps)
        {
            await app.DisposeAsync().ConfigureAwait(false);
        }
        Runtime.Dispose();
        Runtime.Cluster?.Dispose();
    }

    private sealed class NoopLifetime : IHostLifetime
    {
        public Task WaitForStartAsync(CancellationToken cancellationToken) => Task.CompletedTask;
        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }
}
