using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text.Json;
using LLMProxy.Configuration;
using LLMProxy.Hosting;
using LLMProxy.Tests.Infrastructure;
using Microsoft.Extensions.Logging;

namespace LLMProxy.Tests.Reliability;

/// <summary>Helpers shared by the reliability suite: metrics parsing, bounded waits, stream draining.</summary>
internal static class ReliabilityKit
{
    /// <summary>Gauges of work in progress: every one must be back to zero once traffic stops.</summary>
    public static async Task AssertIdleAsync(HttpClient admin, TimeSpan? timeout = null)
    {
        string metrics = "";
        await WaitUntilAsync(async () =>
        {
            metrics = await admin.GetStringAsync("/metrics");
            return Sum(metrics, "llmproxy_active_connections") == 0 && Sum(metrics, "llmproxy_upstream_inflight") == 0;
        }, timeout ?? TimeSpan.FromSeconds(10), () => Task.FromResult(
            Lines(metrics, "llmproxy_active_connections") + "\n" + Lines(metrics, "llmproxy_upstream_inflight")));
    }

    /// <summary>Reads a response body to its end. Returns the text and whether it ended cleanly; an abort is
    /// reported (not thrown) so a test can assert on what arrived before it.</summary>
    public static async Task<(string Text, bool CleanEnd, Exception? Error)> DrainAsync(HttpResponseMessage response, TimeSpan bound)
    {
        var stream = await response.Content.ReadAsStreamAsync();
        var received = new MemoryStream();
        var buffer = new byte[4096];
        using var cts = new CancellationTokenSource(bound);
        try
        {
            int n;
            while ((n = await stream.ReadAsync(buffer, cts.Token)) > 0)
            {
                received.Write(buffer, 0, n);
            }
            return (System.Text.Encoding.UTF8.GetString(received.ToArray()), true, null);
        }
        catch (OperationCanceledException) when (cts.IsCancellationRequested)
        {
            throw new TimeoutException("the response body neither ended nor aborted within " + bound + "; got: " +
                System.Text.Encoding.UTF8.GetString(received.ToArray()));
        }
        catch (Exception ex) when (ex is IOException or HttpRequestException)
        {
            return (System.Text.Encoding.UTF8.GetString(received.ToArray()), false, ex);
        }
    }

    public static async Task AssertErrorAsync(HttpResponseMessage response, HttpStatusCode status, string code)
    {
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(status == response.StatusCode, $"expected {(int)status} {code}, got {(int)response.StatusCode}: {text}");
        Assert.Equal("application/json", response.Content.Headers.ContentType?.MediaType);
        using var doc = JsonDocument.Parse(text);
        Assert.Equal(code, doc.RootElement.GetProperty("error").GetProperty("code").GetString());
        Assert.Equal("llmproxy_error", doc.RootElement.GetProperty("error").GetProperty("type").GetString());
    }

    public static HttpClient Client(string baseUrl, TimeSpan? timeout = null) =>
        new() { BaseAddress = new Uri(baseUrl), Timeout = timeout ?? TimeSpan.FromSeconds(20) };

    public static HttpRequestMessage Chat(bool stream = false, string path = "/v1/chat/completions") =>
        new(HttpMethod.Post, path)
        {
            Content = new StringContent($"{{\"model\":\"m\",\"stream\":{(stream ? "true" : "false")},\"messages\":[]}}",
                System.Text.Encoding.UTF8, "application/json"),
        };

    /// <summary>Access-log lines (event id 1) captured so far.</summary>
    public static List<string> AccessLines(CapturingLoggerProvider logs) =>
        [.. logs.Entries.Where(e => e.Id.Id == 1 && e.Category == "LLMProxy.Access").Select(e => e.Message)];
}

/// <summary>
/// Like <see cref="TestProxy"/>, but the YAML goes through <see cref="ConfigLoader.LoadYaml"/> with an explicit
/// environment, so <c>${VAR}</c> expansion is part of what is tested.
/// </summary>
internal sealed class EnvProxy : IAsyncDisposable
{
    private readonly ILoggerFactory _loggerFactory;

    private EnvProxy(ProxyHost host, ILoggerFactory loggerFactory, CapturingLoggerProvider logs)
    {
        Host = host;
        _loggerFactory = loggerFactory;
        Logs = logs;
        Admin = ReliabilityKit.Client($"http://127.0.0.1:{host.AdminPort}");
    }

    public ProxyHost Host { get; }
    public CapturingLoggerProvider Logs { get; }
    public HttpClient Admin { get; }

    public string ForwardUrl(string name) => $"http://127.0.0.1:{Host.ForwardPorts[name]}";

    public static async Task<EnvProxy> StartAsync(string yaml, IReadOnlyDictionary<string, string> env)
    {
        var result = ConfigLoader.LoadYaml(yaml, name => env.TryGetValue(name, out var v) ? v : null);
        Assert.True(result.Success, "config errors: " + string.Join("; ", result.Errors));
        var logs = new CapturingLoggerProvider();
        // The proxy's own categories at every level it can emit (Debug in development mode); framework categories
        // filtered exactly as Cli/LoggingSetup does, because that is what the binary can ever print: Kestrel's and
        // YARP's Information lines name full URLs, query strings included.
        var loggerFactory = LoggerFactory.Create(b => b.SetMinimumLevel(LogLevel.Trace)
            .AddFilter("Microsoft", LogLevel.Warning).AddFilter("System", LogLevel.Warning).AddFilter("Yarp", LogLevel.Warning)
            .AddProvider(logs));
        var host = await ProxyHost.StartAsync(result.Config!, loggerFactory,
            new ProxyHostOptions { EphemeralPorts = true, ProcessMetrics = false });
        return new EnvProxy(host, loggerFactory, logs);
    }

    public async ValueTask DisposeAsync()
    {
        Admin.Dispose();
        await Host.StopAsync(TimeSpan.FromSeconds(2));
        await Host.DisposeAsync();
        _loggerFactory.Dispose();
    }
}
