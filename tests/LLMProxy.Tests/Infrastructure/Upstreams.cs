using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Http;

namespace LLMProxy.Tests.Infrastructure;

/// <summary>Several named scripted upstreams and the YAML that declares them.</summary>
public sealed class Upstreams : IAsyncDisposable
{
    private readonly List<ScriptedUpstream> _servers = [];
    private readonly List<string> _names = [];

    public static async Task<Upstreams> StartAsync(params (string Name, Func<HttpContext, Task> Script)[] upstreams)
    {
        var set = new Upstreams();
        foreach (var (name, script) in upstreams)
        {
            set._servers.Add(await ScriptedUpstream.StartAsync(script));
            set._names.Add(name);
        }
        return set;
    }

    public ScriptedUpstream this[string name] => _servers[_names.IndexOf(name)];

    /// <summary>upstreams: entries; <paramref name="extra"/> maps a name to extra YAML lines for it.</summary>
    public string Yaml(Func<string, string>? extra = null) => string.Join('\n', _names.Select((n, i) =>
        $"- name: {n}\n  url: \"{_servers[i].Url}\"" + (extra?.Invoke(n) is { Length: > 0 } e ? "\n" + string.Join('\n', e.Split('\n').Select(l => "  " + l)) : "")));

    public string Members(Func<string, int>? weight = null) => string.Join('\n', _names.Select(n =>
        weight is null ? $"- name: {n}" : $"- name: {n}\n  weight: {weight(n)}"));

    public async ValueTask DisposeAsync()
    {
        foreach (var s in _servers)
        {
            await s.DisposeAsync();
        }
    }

    /// <summary>An HttpClient whose connections come from the given loopback source address (127.0.0.x).</summary>
    public static HttpClient ClientFrom(string localIp, string baseUrl) => new(new SocketsHttpHandler
    {
        ConnectCallback = async (ctx, ct) =>
        {
            var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            try
            {
                socket.Bind(new IPEndPoint(IPAddress.Parse(localIp), 0));
                await socket.ConnectAsync(ctx.DnsEndPoint, ct);
                return new NetworkStream(socket, ownsSocket: true);
            }
            catch
            {
                socket.Dispose();
                throw;
            }
        },
    })
    { BaseAddress = new Uri(baseUrl) };
}

public static class ResponseExtensions
{
    public static string UpstreamName(this HttpResponseMessage response) =>
        response.Headers.TryGetValues("X-Upstream", out var v) ? v.Single() : "(proxy)";
}
