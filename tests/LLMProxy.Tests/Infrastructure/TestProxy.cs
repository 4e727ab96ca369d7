using LLMProxy.Configuration;
using LLMProxy.Hosting;
using Microsoft.Extensions.Logging;

namespace LLMProxy.Tests.Infrastructure;

/// <summary>
/// The real proxy pipeline (Kestrel, YARP, runtime) started in-process from YAML on ephemeral ports.
/// </summary>
public sealed class TestProxy : IAsyncDisposable
{
    private readonly ProxyHost _host;
    private readonly ILoggerFactory _loggerFactory;

    private TestProxy(ProxyHost host, ILoggerFactory loggerFactory, CapturingLoggerProvider logs)
    {
        _host = host;
        _loggerFactory = loggerFactory;
        Logs = logs;
        Client = new HttpClient { BaseAddress = new Uri(ForwardUrl()), Timeout = TimeSpan.FromSeconds(30) };
        Admin = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{host.AdminPort}"), Timeout = TimeSpan.FromSeconds(30) };
    }

    public CapturingLoggerProvider Logs { get; }
    /// <summary>Client for the first forward.</summary>
    public HttpClient Client { get; }
    public HttpClient Admin { get; }
    internal ProxyHost Host => _host;
    public int AdminPort => _host.AdminPort;

    public string ForwardUrl(string? forward = null) =>
        $"http://127.0.0.1:{(forward is null ? _host.ForwardPorts.Values.First() : _host.ForwardPorts[forward])}";

    /// <param name="reloadYaml">What a reload reads (SIGHUP / POST /api/v1/reload); null = reload unavailable.</param>
    public static async Task<TestProxy> StartAsync(string yaml, TimeProvider? time = null, Func<string>? reloadYaml = null)
    {
        var result = ConfigLoader.LoadYaml(yaml);
        Assert.True(result.Success, "config errors: " + string.Join("; ", result.Errors));
        var logs = new CapturingLoggerProvider();
        var loggerFactory = LoggerFactory.Create(b => b.SetMinimumLevel(LogLevel.Debug).AddProvider(logs));
        var host = await ProxyHost.StartAsync(result.Config!, loggerFactory,
            new ProxyHostOptions
            {
                EphemeralPorts = true,
                Time = time ?? TimeProvider.System,
                ProcessMetrics = false,
                ReloadSource = reloadYaml is null ? null : () => ConfigLoader.LoadYaml(reloadYaml()),
            });
        return new TestProxy(host, loggerFactory, logs);
    }

    /// <summary>A one-forward, one-group config in the reference format over the given upstream blocks.</summary>
    public static string Config(string upstreamsYaml, string members, string groupExtra = "", string forwardExtra = "", string serverExtra = "", string adminExtra = "") => $"""
        httpServer:
          forwards:
            - name: fwd
              port: 3000
              address: "127.0.0.1"
              defaultGroup: g
        {Indent(forwardExtra, 6)}
          admin:
            port: 9000
            address: "127.0.0.1"
        {Indent(adminExtra, 4)}
        {Indent(serverExtra, 2)}
        upstreams:
        {Indent(upstreamsYaml, 2)}
        upstreamGroups:
          - name: g
            upstreams:
        {Indent(members, 6)}
        {Indent(groupExtra, 4)}
        """;

    private static string Indent(string text, int spaces)
    {
        if (string.IsNullOrWhiteSpace(text))
        {
            return "";
        }
        var pad = new string(' ', spaces);
        return string.Join('\n', text.Replace("\r", "").Trim('\n').Split('\n').Select(l => pad + l));
    }

    public Task StopAsync(TimeSpan drain) => _host.StopAsync(drain);

    public async ValueTask DisposeAsync()
    {
        Client.Dispose();
        Admin.Dispose();
        await _host.StopAsync(TimeSpan.FromSeconds(2));
        await _host.DisposeAsync();
        _loggerFactory.Dispose();
    }
}
