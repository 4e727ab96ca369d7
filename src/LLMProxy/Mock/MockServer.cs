using System.Net;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http.Features;

namespace LLMProxy.Mock;

/// <summary>
/// The built-in OpenAI-compatible upstream: <c>POST …/chat/completions</c> (JSON or SSE with <c>usage</c>),
/// <c>GET /v1/models</c>, <c>GET /ping</c> and <c>/health</c>; scripted per request with <see cref="MockHeaders"/>.
/// Self-contained Kestrel host without console lifetime, so several can run in one process (tests, the
/// proxy's <c>demo</c> command) without touching Ctrl-C/SIGTERM handling.
/// </summary>
public sealed class MockServer : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly MockHandler _handler;
    private readonly CancellationTokenSource _stopping;
    private readonly Lock _stopLock = new();
    private Task? _stopTask;
    private int _disposed;

    private MockServer(WebApplication app, MockHandler handler, CancellationTokenSource stopping, int port, Uri baseUrl)
    {
        _app = app;
        _handler = handler;
        _stopping = stopping;
        Port = port;
        BaseUrl = baseUrl;
    }

    /// <summary>Actual bound port (the ephemeral one when <see cref="MockOptions.Port"/> is 0).</summary>
    public int Port { get; }

    /// <summary>Where clients reach the mock, e.g. <c>http://127.0.0.1:PORT/</c> (loopback when bound to any address).</summary>
    public Uri BaseUrl { get; }

    /// <summary>Requests received so far, every path included.</summary>
    public long RequestCount => _handler.RequestCount;

    /// <summary>Completions answered 429 because their API key was out of its limits (<see cref="MockOptions.TokensPerMinute"/>,
    /// <see cref="MockOptions.RequestsPerMinute"/>); also in <c>GET /mock/stats</c>.</summary>
    public long RateLimitedCount => _handler.RateLimitedCount;

    /// <summary>Tokens charged to API keys by the limits (0 without limits).</summary>
    public long TokensCharged => _handler.TokensCharged;

    /// <summary>The mock host's services (tests check what is, and is not, registered).</summary>
    internal IServiceProvider Services => _app.Services;

    /// <summary>Requests still being handled.</summary>
    internal int InFlight => _handler.InFlight;

    /// <summary>Binds and starts the mock. Throws <see cref="ArgumentException"/> for invalid options
    /// (all problems in one message, see <see cref="MockOptions.Validate"/>) and <see cref="IOException"/>
    /// when the port cannot be bound.</summary>
    /// <param name="loggerFactory">Receives the host's warnings and errors; none are logged when null.</param>
    public static async Task<MockServer> StartAsync(MockOptions options, ILoggerFactory? loggerFactory = null, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        var errors = options.Validate();
        if (errors.Count > 0)
            throw new ArgumentException("Invalid mock options: " + string.Join("; ", errors), nameof(options));
        TryParseAddress(options.Address, out var address);

        // Empty builder: no appsettings, no environment variables (ASPNETCORE_URLS must not move the mock),
        // no hosting startup assemblies.
        var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions());
        builder.WebHost.UseSetting(WebHostDefaults.PreventHostingStartupKey, "true");
        builder.WebHost.UseKestrelCore().ConfigureKestrel(kestrel =>
        {
            kestrel.AddServerHeader = false;
            kestrel.Listen(address, options.Port);
        });
        builder.Services.AddSingleton<IHostLifetime, NoopHostLifetime>();
        // Streams end on their own when stopping (see MockHandler); this only bounds a stuck connection.
        builder.Services.Configure<HostOptions>(host => host.ShutdownTimeout = TimeSpan.FromSeconds(5));
        builder.Logging.ClearProviders();
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        if (loggerFactory is not null)
            builder.Logging.AddProvider(new ForwardingLoggerProvider(loggerFactory));

        var app = builder.Build();
        var stopping = new CancellationTokenSource();
        var handler = new MockHandler(options, stopping.Token);
        ((IApplicationBuilder)app).Run(handler.HandleAsync);
        try
        {
            await app.StartAsync(ct);
            var bound = app.Services.GetRequiredService<IServer>().Features.GetRequiredFeature<IServerAddressesFeature>().Addresses;
            int port = new Uri(bound.First()).Port;
            return new MockServer(app, handler, stopping, port, MakeBaseUrl(address, port));
        }
        catch
        {
            await app.DisposeAsync();
            stopping.Dispose();
            throw;
        }
    }

    /// <summary>Stops listening; open streams are cut (the client sees an aborted body, not a clean end).
    /// Idempotent; concurrent calls share one stop.</summary>
    public Task StopAsync(CancellationToken ct = default)
    {
        lock (_stopLock)
            return _stopTask ??= StopCoreAsync(ct);
    }

    private async Task StopCoreAsync(CancellationToken ct)
    {
        await _stopping.CancelAsync();
        await _app.StopAsync(ct);
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        try
        {
            await StopAsync();
        }
        finally
        {
            await _app.DisposeAsync();
            _stopping.Dispose();
        }
    }

    internal static bool TryParseAddress(string value, out IPAddress address)
    {
        switch (value)
        {
            case "*":
                address = IPAddress.Any;
                return true;
            case var _ when value.Equals("localhost", StringComparison.OrdinalIgnoreCase):
                address = IPAddress.Loopback;
                return true;
            default:
                return IPAddress.TryParse(value, out address!);
        }
    }

    private static Uri MakeBaseUrl(IPAddress address, int port)
    {
        var host = address.Equals(IPAddress.Any) ? IPAddress.Loopback
            : address.Equals(IPAddress.IPv6Any) ? IPAddress.IPv6Loopback
            : address;
        return new UriBuilder(Uri.UriSchemeHttp, host.ToString(), port).Uri;
    }
}
