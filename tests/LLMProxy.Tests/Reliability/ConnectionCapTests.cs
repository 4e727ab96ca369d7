using System.Diagnostics;
using LLMProxy.Tests.Infrastructure;
using Xunit.Abstractions;
using static LLMProxy.Tests.Reliability.ReliabilityKit;

namespace LLMProxy.Tests.Reliability;

/// <summary><c>httpServer.forwards[].maxConnections</c> through the real listener, on raw sockets.</summary>
public class ConnectionCapTests(ITestOutputHelper output)
{
    private const string Request = "GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n";
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(10);

    private static async Task<RawClient> ServedKeepAliveAsync(int port)
    {
        var raw = await RawClient.ConnectAsync(port);
        await raw.SendAsync(Request);
        var response = await raw.ReadResponseAsync(Bound);
        Assert.Equal(200, response.Status);
        return raw;
    }

    private static async Task<string> ConnectionSeriesAsync(TestProxy proxy, string family, double expected)
    {
        var series = $"{family}{{forward=\"fwd\"}}";
        await AssertSampleAsync(proxy.Admin, series, expected);
        return series;
    }

    [Fact]
    public async Task MaxConnections3_FourthRefusedAtOnceUnanswered_ServedAfterOneCloses_CountedAndLoggedOnce()
    {
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u1"));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config($"- name: u1\n  url: \"{upstream.Url}\"", "- name: u1",
            forwardExtra: "maxConnections: 3"));
        var port = RawClient.PortOf(proxy.ForwardUrl());

        // Three idle keep-alive connections: the forward is at its cap.
        var held = new List<RawClient>();
        for (var i = 0; i < 3; i++)
        {
            held.Add(await ServedKeepAliveAsync(port));
        }
        await ConnectionSeriesAsync(proxy, "llmproxy_client_connections", 3);

        // A fourth is closed as soon as it is accepted, without an answer to the request it sent.
        var clock = Stopwatch.StartNew();
        await using (var fourth = await RawClient.ConnectAsync(port))
        {
            await fourth.SendAsync(Request);
            var (closed, received) = await fourth.ReadUntilCloseAsync(Bound);
            Assert.True(closed, "the connection over the cap stayed open");
            Assert.Equal(0, received);
        }
        var refusedAfter = clock.Elapsed;
        await ConnectionSeriesAsync(proxy, "llmproxy_connections_rejected_total", 1);

        // A burst over the cap: every one refused, the log says so once (rate-limited), the metric counts each.
        for (var i = 0; i < 20; i++)
        {
            await using var extra = await RawClient.ConnectAsync(port);
            Assert.True((await extra.ReadUntilCloseAsync(Bound)).Closed);
        }
        await ConnectionSeriesAsync(proxy, "llmproxy_connections_rejected_total", 21);
        Assert.Single(proxy.Logs.Entries, e => e.Id.Name == "ConnectionsRefused");

        // The held connections are untouched, and once one closes a new client is served.
        var stillServed = held[0];
        await stillServed.SendAsync(Request);
        Assert.Equal(200, (await stillServed.ReadResponseAsync(Bound)).Status);
        await held[2].DisposeAsync();
        await ConnectionSeriesAsync(proxy, "llmproxy_client_connections", 2);
        await using var next = await ServedKeepAliveAsync(port);
        await ConnectionSeriesAsync(proxy, "llmproxy_client_connections", 3);

        await held[0].DisposeAsync();
        await held[1].DisposeAsync();
        output.WriteLine($"connection over the cap closed {refusedAfter.TotalMilliseconds:F1} ms after connecting");
    }
}
