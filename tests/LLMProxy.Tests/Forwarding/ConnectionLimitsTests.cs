using System.Net;
using System.Net.Sockets;
using LLMProxy.Tests.Infrastructure;
using Microsoft.AspNetCore.Http;

namespace LLMProxy.Tests.Forwarding;

public class ConnectionLimitsTests
{
    [Fact]
    public async Task KeepaliveAtItsMaximum_UpstreamConnectsAndAnswers()
    {
        // The largest keepalive the config accepts becomes TCP_KEEPIDLE 32767 s on each upstream socket: the kernel must take it.
        await using var upstream = await ScriptedUpstream.StartAsync(ctx => ctx.Response.WriteAsync("ok"));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config($"- name: u1\n  url: \"{upstream.Url}\"", "- name: u1", groupExtra: $"""
            httpClient:
              keepalive: {LLMProxy.Configuration.HttpClientConfig.MaxKeepalive}
            """));

        using var r = await proxy.Client.GetAsync("/");

        Assert.Equal(HttpStatusCode.OK, r.StatusCode);
    }

    [Fact]
    public async Task MaxPerHost_CapsConcurrentUpstreamConnections()
    {
        var inFlight = 0;
        var peak = 0;
        var connections = new System.Collections.Concurrent.ConcurrentDictionary<string, bool>();
        await using var upstream = await ScriptedUpstream.StartAsync(async ctx =>
        {
            connections.TryAdd(ctx.Connection.Id, true);
            var now = Interlocked.Increment(ref inFlight);
            int seen;
            while ((seen = Volatile.Read(ref peak)) < now && Interlocked.CompareExchange(ref peak, now, seen) != seen)
            {
            }
            await Task.Delay(200);
            Interlocked.Decrement(ref inFlight);
            await ctx.Response.WriteAsync("ok");
        });
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config($"- name: u1\n  url: \"{upstream.Url}\"", "- name: u1", groupExtra: """
            httpClient:
              connect:
                maxPerHost: 2
            """));

        var requests = Enumerable.Range(0, 8).Select(async _ =>
        {
            using var r = await proxy.Client.GetAsync("/slow");
            Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        });
        await Task.WhenAll(requests);

        Assert.Equal(2, peak);
        Assert.Equal(2, connections.Count);
        Assert.Equal(8, upstream.Count);
    }

    [Fact]
    public async Task ForwardIdleTimeout_ClosesIdleKeepAliveConnection()
    {
        await using var upstream = await ScriptedUpstream.StartAsync(async ctx =>
        {
            ctx.Response.ContentLength = 2;
            await ctx.Response.WriteAsync("ok");
        });
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config($"- name: u1\n  url: \"{upstream.Url}\"", "- name: u1", forwardExtra: """
            timeout:
              idle: 1000
            """));
        using var tcp = new TcpClient();
        await tcp.ConnectAsync(IPAddress.Loopback, new Uri(proxy.ForwardUrl()).Port);
        var stream = tcp.GetStream();
        await stream.WriteAsync("GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n"u8.ToArray());
        var buffer = new byte[4096];
        await ReadOneResponseAsync(stream); // the answer; the connection stays open (keep-alive)

        var watch = System.Diagnostics.Stopwatch.StartNew();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(15));
        var read = await stream.ReadAsync(buffer, cts.Token); // 0 = the server closed the idle connection
        Assert.Equal(0, read);
        Assert.True(watch.Elapsed >= TimeSpan.FromMilliseconds(800), $"closed after {watch.Elapsed}, before the idle timeout");
    }

    private static async Task ReadOneResponseAsync(NetworkStream stream)
    {
        var received = new List<byte>();
        var buffer = new byte[4096];
        while (true)
        {
            var n = await stream.ReadAsync(buffer);
            Assert.True(n > 0, "connection closed before the response was complete");
            received.AddRange(buffer.AsSpan(0, n).ToArray());
            var text = System.Text.Encoding.ASCII.GetString(received.ToArray());
            var end = text.IndexOf("\r\n\r\n", StringComparison.Ordinal);
            if (end < 0)
            {
                continue;
            }
            var match = System.Text.RegularExpressions.Regex.Match(text, "Content-Length: (\\d+)", System.Text.RegularExpressions.RegexOptions.IgnoreCase);
            Assert.True(match.Success, "expected a Content-Length response");
            if (received.Count >= end + 4 + int.Parse(match.Groups[1].Value))
            {
                return;
            }
        }
    }
}
