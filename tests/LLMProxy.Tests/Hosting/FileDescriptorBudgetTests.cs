using LLMProxy.Configuration;
using System.Net;
using System.Net.Sockets;
using LLMProxy.Hosting;
using Microsoft.AspNetCore.Connections;
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
    public void Forward_FollowsTheConfigInForce_First32AdminConnectionsKeepOnlyTheRuntimesRoom()
    {
        // As the host wires it: the room for the pools is the cap of the runtime in force, computed when it was built.
        using var first = Runtime(OneGroup);
        var holder = new LLMProxy.Runtime.RuntimeHolder(first);
        var ceiling = new DescriptorCeiling(4096, () => holder.Current.UpstreamConnectionCap);
        Assert.Equal(4096 - 64 - 32 - 100, ceiling.Forward);
        Assert.Equal(4096 - 64, ceiling.Admin);
        // The admin room is a count: the pools' connections take the lowest free numbers too, so it cannot be a region.
        Assert.Equal(ceiling.Admin, ceiling.For(ListenerKind.Admin, adminOpen: 0));
        Assert.Equal(ceiling.Admin, ceiling.For(ListenerKind.Admin, adminOpen: DescriptorCeiling.AdminRoom - 1));
        Assert.Equal(ceiling.Forward, ceiling.For(ListenerKind.Admin, adminOpen: DescriptorCeiling.AdminRoom));
        Assert.Equal(ceiling.Forward, ceiling.For(ListenerKind.Forward, adminOpen: 0));

        // A reload that adds a host to the group keeps room for its pool too.
        using var second = Runtime(OneGroup.Replace("      - name: u1\n", "      - name: u1\n      - name: u2\n", StringComparison.Ordinal));
        holder.Swap(second);
        Assert.Equal(4096 - 64 - 32 - 200, ceiling.For(ListenerKind.Forward, adminOpen: 0));
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
    public async Task ConnectionAtTheCeiling_IsClosedAndCounted_OneBelowIsKept()
    {
        using var listener = Listen();
        using var client = new Socket(SocketType.Stream, ProtocolType.Tcp);
        await client.ConnectAsync(listener.LocalEndPoint!);
        using var accepted = await listener.AcceptAsync();
        var descriptor = accepted.Handle.ToInt64();
        var metrics = new ProxyMetrics(includeProcessMetrics: false);
        // Pools larger than any table: the room kept is half the limit, so the forward ceiling is the limit's other half.
        AcceptGuard Guard(long limit) => new(new DescriptorCeiling(limit, () => 100_000_000), metrics, NullLogger.Instance);

        Assert.False(Guard(2 * (descriptor + 1)).ShedIfCrowded(accepted, ListenerKind.Forward));
        Assert.True(Guard(2 * descriptor).ShedIfCrowded(accepted, ListenerKind.Forward));

        Assert.Equal(0, await client.ReceiveAsync(new byte[16]).WaitAsync(TimeSpan.FromSeconds(10)));
        var text = await MetricsText.ExportAsync(metrics.Registry);
        Assert.Equal(1, Sample(text, "llmproxy_connections_shed_total{listener=\"forward\"}"));
        Assert.Equal(0, Sample(text, "llmproxy_connections_shed_total{listener=\"admin\"}"));
    }

    /// <summary>The admin room is counted from accept (a burst is counted before Kestrel runs any of it) to the end of
    /// the connection's middleware; forward connections and shed ones are not counted.</summary>
    [Fact]
    public async Task AdminConnections_CountedFromAcceptToTheirEnd_OnlyKeptOnes()
    {
        using var listener = Listen();
        var guard = new AcceptGuard(new DescriptorCeiling(null, () => 0), new ProxyMetrics(includeProcessMetrics: false), NullLogger.Instance);
        var sockets = new List<Socket>();
        try
        {
            for (var i = 0; i < 3; i++)
            {
                var client = new Socket(SocketType.Stream, ProtocolType.Tcp);
                sockets.Add(client);
                await client.ConnectAsync(listener.LocalEndPoint!);
                sockets.Add(await listener.AcceptAsync());
            }
            Assert.False(guard.ShedIfCrowded(sockets[1], ListenerKind.Admin));
            Assert.False(guard.ShedIfCrowded(sockets[3], ListenerKind.Admin));
            Assert.False(guard.ShedIfCrowded(sockets[5], ListenerKind.Forward));
            Assert.Equal(2, guard.AdminOpen);

            var ending = new TaskCompletionSource();
            var connection = guard.CountAdmin(_ => ending.Task)(new DefaultConnectionContext());
            Assert.Equal(2, guard.AdminOpen);
            ending.SetResult();
            await connection;
            Assert.Equal(1, guard.AdminOpen);
        }
        finally
        {
            sockets.ForEach(s => s.Dispose());
        }
    }

    private static Socket Listen()
    {
        var listener = new Socket(SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(8);
        return listener;
    }
}
