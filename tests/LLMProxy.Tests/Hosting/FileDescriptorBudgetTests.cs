using LLMProxy.Configuration;
using LLMProxy.Hosting;
using LLMProxy.Observability;
using LLMProxy.Tests.Infrastructure;
using Microsoft.Extensions.Logging.Abstractions;

namespace LLMProxy.Tests.Hosting;

public class FileDescriptorBudgetTests
{
    [Fact]
    public void Needed_SumsForwardCapsAndUpstreamPoolsPerDistinctHost_PlusReserve()
    {
        var yaml = """
            httpServer:
              forwards:
                - name: a
                  port: 3000
                  defaultGroup: g1
                  maxConnections: 1000
                - name: b
                  port: 3001
                  defaultGroup: g2
            upstreams:
              - name: u1
                url: "https://api.example.com/v1/chat/completions"
              - name: u2
                url: "https://api.example.com/v1/embeddings"
              - name: u3
                url: "http://10.0.0.7:8080"
            upstreamGroups:
              - name: g1
                upstreams:
                  - name: u1
                  - name: u2
                  - name: u3
                httpClient:
                  connect:
                    maxPerHost: 20
              - name: g2
                upstreams:
                  - name: u3
            """;
        var config = ConfigLoader.LoadYaml(yaml).Config!;

        // Forwards 1000 + 10000; g1: 2 hosts × 20; g2: 1 host × 50.
        Assert.Equal(1000 + 10000 + 40 + 50 + FileDescriptorBudget.Reserve, FileDescriptorBudget.Needed(config));
    }

    [Theory]
    [InlineData("Max open files            1024                 524288               files     ", 1024L)]
    [InlineData("Max open files            unlimited            unlimited            files     ", null)]
    [InlineData("Max processes             63413                63413                processes ", null)]
    public void ParseOpenFileLimit_ReadsSoftLimitOfProcLimits(string line, long? expected) =>
        Assert.Equal(expected, FileDescriptorBudget.ParseOpenFileLimit("Limit                     Soft Limit           Hard Limit           Units     \n" + line + "\n"));
}

public class DescriptorCeilingTests
{
    private const string OneGroup = """
        httpServer:
          forwards:
            - name: a
              port: 3000
              defaultGroup: g
        upstreams:
          - name: u1
            url: "http://10.0.0.7:8080"
          - name: u2
            url: "http://10.0.0.8:8080"
        upstreamGroups:
          - name: g
            upstreams:
              - name: u1
            httpClient:
              connect:
                maxPerHost: 100
        """;

    [Theory]
    [InlineData(65536L, 50L, 65536L - 64 - 32 - 50)]
    [InlineData(1024L, 100L, 1024L - 196)]
    // Pools that would take more than half the table: half is kept, the other half serves clients.
    [InlineData(1024L, 5000L, 512L)]
    [InlineData(400L, 150L, 200L)]
    public void ForwardCeiling_KeepsRoomForPoolsAdminAndRuntime_AtMostHalf(long limit, long upstream, long expected) =>
        Assert.Equal(expected, DescriptorCeiling.ForwardCeiling(limit, upstream));

    [Fact]
    public void Forward_FollowsTheConfigInForce_AdminMay32More()
    {
        // As the host wires it: the room for the pools is the cap of the runtime in force, computed when it was built.
        using var first = Runtime(OneGroup);
        var holder = new LLMProxy.Runtime.RuntimeHolder(first);
        var ceiling = new DescriptorCeiling(4096, () => holder.Current.UpstreamConnectionCap);
        Assert.Equal(4096 - 64 - 32 - 100, ceiling.Forward);
        Assert.Equal(4096 - 64 - 100, ceiling.Admin);
        Assert.Equal(ceiling.Admin, ceiling.For(ListenerKind.Admin));

        // A reload that adds a host to the group keeps room for its pool too.
        using var second = Runtime(OneGroup.Replace("      - name: u1\n", "      - name: u1\n      - name: u2\n", StringComparison.Ordinal));
        holder.Swap(second);
        Assert.Equal(4096 - 64 - 32 - 200, ceiling.For(ListenerKind.Forward));
    }

    private static LLMProxy.Runtime.ProxyRuntime Runtime(string yaml) =>
        new(ConfigLoader.LoadYaml(yaml).Config!, new ProxyMetrics(includeProcessMetrics: false), TimeProvider.System, NullLogger.Instance);

    [Fact]
    public void UnknownLimit_NoCeiling()
    {
        var ceiling = new DescriptorCeiling(null, () => throw new InvalidOperationException("not read without a limit"));
        Assert.Equal(long.MaxValue, ceiling.Forward);
        Assert.Equal(long.MaxValue, ceiling.Admin);
    }
}

public class AcceptGuardTests
{
    [Fact]
    public async Task ConnectionAtTheCeiling_IsClosedAndCounted_OneBelowIsKept_AdminMayGoHigher()
    {
        using var listener = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
        listener.Bind(new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, 0));
        listener.Listen(8);
        using var client = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
        await client.ConnectAsync(listener.LocalEndPoint!);
        using var accepted = await listener.AcceptAsync();
        var descriptor = accepted.Handle.ToInt64();
        // Pools larger than any table: the room kept is half the limit, so the forward ceiling is the limit's other half.
        var metrics = new ProxyMetrics(includeProcessMetrics: false);
        AcceptGuard Guard(long limit) => new(new DescriptorCeiling(limit, () => 100_000_000), metrics, NullLogger.Instance);

        Assert.False(Guard(2 * (descriptor + 1)).ShedIfCrowded(accepted, ListenerKind.Forward));
        // At the forward ceiling an admin connection is still kept (it may use the admin room) ...
        Assert.False(Guard(2 * descriptor).ShedIfCrowded(accepted, ListenerKind.Admin));
        // ... a forward connection is closed.
        Assert.True(Guard(2 * descriptor).ShedIfCrowded(accepted, ListenerKind.Forward));

        Assert.Equal(0, await client.ReceiveAsync(new byte[16]).WaitAsync(TimeSpan.FromSeconds(10)));
        var text = await MetricsText.ExportAsync(metrics.Registry);
        Assert.Equal(1, Sample(text, "llmproxy_connections_shed_total{listener=\"forward\"}"));
        Assert.Equal(0, Sample(text, "llmproxy_connections_shed_total{listener=\"admin\"}"));
    }
}
