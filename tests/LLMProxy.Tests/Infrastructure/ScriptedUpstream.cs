using System.Collections.Concurrent;
using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace LLMProxy.Tests.Infrastructure;

/// <summary>What a scripted upstream received.</summary>
public sealed record ReceivedRequest(string Method, string Path, string Query, IReadOnlyDictionary<string, string[]> Headers, byte[] Body)
{
    public string? Header(string name) => Headers.TryGetValue(name, out var v) ? string.Join(", ", v) : null;

    /// <summary>Kestrel's id of the TCP connection the request came on: equal ids mean a reused connection.</summary>
    public string ConnectionId { get; init; } = "";

    /// <summary>The request target exactly as it arrived (path still percent-encoded, query included).</summary>
    public string RawTarget { get; init; } = "";
}

/// <summary>
/// A real Kestrel upstream on 127.0.0.1:0 whose answer is a script, recording every request it received.
/// </summary>
public sealed class ScriptedUpstream : IAsyncDisposable
{
    private readonly WebApplication _app;
    private int _count;

    private ScriptedUpstream(WebApplication app, int port)
    {
        _app = app;
        Port = port;
    }

    public int Port { get; }
    public string Url => $"http://127.0.0.1:{Port}";
    public ConcurrentQueue<ReceivedRequest> Received { get; } = new();
    public int Count => Volatile.Read(ref _count);

    public static async Task<ScriptedUpstream> StartAsync(Func<HttpContext, Task> script, bool recordBody = true)
    {
        var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions());
        builder.WebHost.UseKestrelCore();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0));
        var app = builder.Build();
        ScriptedUpstream? self = null;
        app.Run(async context =>
        {
            Interlocked.Increment(ref self!._count);
            byte[] body = [];
            if (recordBody)
            {
                using var ms = new MemoryStream();
                await context.Request.Body.CopyToAsync(ms, context.RequestAborted);
                body = ms.ToArray();
            }
            var headers = context.Request.Headers.ToDictionary(h => h.Key, h => h.Value.Select(v => v ?? "").ToArray(), StringComparer.OrdinalIgnoreCase);
            self.Received.Enqueue(new ReceivedRequest(context.Request.Method, context.Request.Path.Value ?? "", context.Request.QueryString.Value ?? "", headers, body)
            {
                ConnectionId = context.Connection.Id,
                RawTarget = context.Features.Get<Microsoft.AspNetCore.Http.Features.IHttpRequestFeature>()?.RawTarget ?? "",
            });
            await script(context);
        });
        await app.StartAsync();
        var port = new Uri(app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First()).Port;
        self = new ScriptedUpstream(app, port);
        return self;
    }

    /// <summary>A script that streams <paramref name="first"/> as SSE and flushes it, waits for <paramref name="proceed"/> (10 s
    /// at most), then sends <paramref name="rest"/> — or, without one, drops the connection mid-stream.</summary>
    public static Func<HttpContext, Task> SseThen(string first, Task proceed, string? rest = null) => async ctx =>
    {
        ctx.Response.ContentType = "text/event-stream";
        await ctx.Response.WriteAsync(first);
        await ctx.Response.Body.FlushAsync();
        await proceed.WaitAsync(TimeSpan.FromSeconds(10));
        if (rest is null)
        {
            ctx.Abort();
            return;
        }
        await ctx.Response.WriteAsync(rest);
    };

    /// <summary>A script answering 200 with a small JSON body and an X-Upstream header naming <paramref name="name"/>.</summary>
    public static Func<HttpContext, Task> Json(string name, int status = 200) => async context =>
    {
        context.Response.StatusCode = status;
        context.Response.ContentType = "application/json";
        context.Response.Headers["X-Upstream"] = name;
        await context.Response.WriteAsync($"{{\"upstream\":\"{name}\"}}");
    };

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync(TimeSpan.FromSeconds(1).ToCancellationToken());
        await _app.DisposeAsync();
    }
}

internal static class TimeSpanExtensions
{
    public static CancellationToken ToCancellationToken(this TimeSpan timeout) => new CancellationTokenSource(timeout).Token;
}

/// <summary>Collects log lines so tests can assert on them (and on what they must never contain).</summary>
public sealed class CapturingLoggerProvider : ILoggerProvider
{
    public ConcurrentQueue<(string Category, LogLevel Level, EventId Id, string Message)> Entries { get; } = new();

    public ILogger CreateLogger(string categoryName) => new CapturingLogger(this, categoryName);

    public string AllText => string.Join('\n', Entries.Select(e => $"{e.Category} {e.Level} {e.Message}"));

    public void Dispose() { }

    private sealed class CapturingLogger(CapturingLoggerProvider owner, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
        public bool IsEnabled(LogLevel logLevel) => true;
        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            owner.Entries.Enqueue((category, logLevel, eventId, formatter(state, exception) + (exception is null ? "" : " " + exception.Message)));
    }
}
