using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using LLMProxy.Tests.Forwarding;
using LLMProxy.Tests.Infrastructure;
using Xunit.Abstractions;
using static LLMProxy.Tests.Reliability.ReliabilityKit;

namespace LLMProxy.Tests.Reliability;

/// <summary>
/// The real binary with a low open-file limit (<c>prlimit</c>) and a flood of more client connections than descriptors,
/// fresh from start (no warm-up): connections accepted above the descriptor ceiling are closed at once, so the process
/// never runs out of descriptors. It keeps serving through the flood (a request on a connection it already had, an
/// admin scrape on a new one), never spins, never aborts, and serves new connections once the flood is gone. Runs alone
/// (the soak collection): the flood is timing-sensitive when the suite's parallel tests hold both cores.
/// </summary>
[Collection(SoakCollection.Name)]
public class FileDescriptorExhaustionTests(ITestOutputHelper output)
{
    private const int FdLimit = 400;
    /// <summary>More than the descriptors left after start-up (~160 in use), fewer than those plus the listen backlog (512).</summary>
    private const int Connections = 600;

    [Fact]
    public async Task ConnectionFlood_Cold_ShedsAboveTheCeiling_KeepsServingThroughIt_NeverAborts()
    {
        if (!CanRun())
        {
            return;
        }
        // A slow answer keeps the flood's requests in flight together: the pool opens all its connections (maxPerHost 50).
        var answer = ScriptedUpstream.Json("u1");
        await using var upstream = await ScriptedUpstream.StartAsync(async context =>
        {
            await Task.Delay(200);
            await answer(context);
        });
        var (proxy, port, adminPort) = await StartUnderLowLimitAsync(upstream.Url);
        await using var _ = proxy;

        // Cold on purpose: before the ceiling, a flood on a process whose thread pool had not grown yet aborted it
        // ("Out of memory.": 25 of 30 trials of bench/fdflood.py) — the runtime could not start a thread.
        using var kept = await OpenAsync(port);
        var held = new List<Socket>();
        try
        {
            await HoldAsync(held, port);
            await proxy.WaitForOutputAsync("file descriptors short: a connection on the forward listener");

            // Flooded: what the process burns meanwhile (a spinning accept loop burns a whole core).
            using var process = Process.GetProcessById(proxy.Pid);
            var cpuBefore = process.TotalProcessorTime;
            var clock = Stopwatch.StartNew();
            await Task.Delay(TimeSpan.FromSeconds(1));
            process.Refresh();
            var share = (process.TotalProcessorTime - cpuBefore) / clock.Elapsed;
            output.WriteLine($"CPU while flooded: {share:P0} of a core");
            Assert.True(share < 0.5, $"the process used {share:P0} of a core while flooded");

            // Then the worst form: every flood connection sends a whole request and never reads the answer, so every one
            // the proxy kept also takes an upstream connection, whose descriptors land just above the forwards' ceiling.
            await SendRequestsAsync(held);
            // Still serving: a connection made before the flood (its request needs an upstream connection, for which
            // room was kept). Its answer also means the flood's requests have taken their upstream connections.
            Assert.Contains("{\"upstream\":\"u1\"}", await GetOnAsync(kept, "/v1/models"));

            // And the admin listener on connections made now, whose descriptors land above the pools' connections: the
            // admin room is a count, not the numbers just above the forwards' ceiling (which the pools took first).
            // Several at once, so that one filling a hole left lower in the table cannot hide it.
            var scrapes = new List<Socket>();
            try
            {
                for (var i = 0; i < 6; i++)
                {
                    scrapes.Add(await OpenAsync(adminPort));
                }
                foreach (var scrape in scrapes)
                {
                    Assert.Contains("llmproxy_connections_shed_total", await GetOnAsync(scrape, "/metrics"));
                }
            }
            finally
            {
                scrapes.ForEach(socket => socket.Dispose());
            }
            using var admin = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
            var metrics = await admin.GetStringAsync($"http://127.0.0.1:{adminPort}/metrics");
            Assert.True(Sample(metrics, "llmproxy_connections_shed_total{listener=\"forward\"}") >= Connections - FdLimit / 2,
                Lines(metrics, "llmproxy_connections_shed_total"));
            Assert.Equal(0, Sample(metrics, "llmproxy_connections_shed_total{listener=\"admin\"}"));
            Assert.Equal(0, Sample(metrics, "llmproxy_accept_pauses_total"));
        }
        finally
        {
            foreach (var socket in held)
            {
                socket.Dispose();
            }
        }

        // The flood gone, new connections are served again.
        using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(5) };
        await WaitUntilAsync(async () =>
        {
            try
            {
                using var response = await client.GetAsync($"http://127.0.0.1:{port}/v1/models");
                return response.StatusCode == HttpStatusCode.OK;
            }
            catch (HttpRequestException)
            {
                return false;
            }
        }, TimeSpan.FromSeconds(30), () => Task.FromResult($"not serving again.\nstdout:\n{proxy.Stdout}\nstderr:\n{proxy.Stderr}"));
        Assert.False(proxy.HasExited, "the proxy exited");
        Assert.DoesNotContain("Out of memory", proxy.Stdout + proxy.Stderr);
    }

    /// <summary>
    /// A flood of the admin port (no connection cap of its own) is shed 32 descriptors above the forwards' ceiling: it can
    /// keep new forward connections out, but never the room kept for upstream connections and the runtime. A forward
    /// connection made before it is served throughout (its request opens an upstream connection), and nothing aborts.
    /// </summary>
    [Fact]
    public async Task AdminFlood_Cold_ShedOnAdmin_ForwardConnectionStillServed_NeverAborts()
    {
        if (!CanRun())
        {
            return;
        }
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u1"));
        var (proxy, port, adminPort) = await StartUnderLowLimitAsync(upstream.Url);
        await using var _ = proxy;

        using var kept = await OpenAsync(port);
        var held = new List<Socket>();
        try
        {
            await HoldAsync(held, adminPort);
            await proxy.WaitForOutputAsync("on the admin listener");
            Assert.Contains("{\"upstream\":\"u1\"}", await GetOnAsync(kept, "/v1/models"));
        }
        finally
        {
            foreach (var socket in held)
            {
                socket.Dispose();
            }
        }

        using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(5) };
        var metricsUrl = $"http://127.0.0.1:{adminPort}/metrics";
        string? metrics = null;
        await WaitUntilAsync(async () =>
        {
            try
            {
                metrics = await client.GetStringAsync(metricsUrl);
                return true;
            }
            catch (HttpRequestException)
            {
                return false;
            }
        }, TimeSpan.FromSeconds(30), () => Task.FromResult($"admin not serving again.\nstdout:\n{proxy.Stdout}"));
        Assert.True(Sample(metrics!, "llmproxy_connections_shed_total{listener=\"admin\"}") >= Connections - FdLimit / 2,
            Lines(metrics!, "llmproxy_connections_shed_total"));
        Assert.Equal(0, Sample(metrics!, "llmproxy_connections_shed_total{listener=\"forward\"}"));
        Assert.Equal(0, Sample(metrics!, "llmproxy_accept_pauses_total"));
        Assert.False(proxy.HasExited, "the proxy exited");
        Assert.DoesNotContain("Out of memory", proxy.Stdout + proxy.Stderr);
    }

    private bool CanRun()
    {
        if (OperatingSystem.IsLinux() && File.Exists("/usr/bin/prlimit"))
        {
            return true;
        }
        output.WriteLine("not run: needs Linux and /usr/bin/prlimit");
        return false;
    }

    /// <summary>Opens <see cref="Connections"/> connections to <paramref name="port"/> that send nothing, into
    /// <paramref name="held"/> (the caller disposes them: the proxy sees them all close).</summary>
    private static async Task HoldAsync(List<Socket> held, int port)
    {
        for (var i = 0; i < Connections; i++)
        {
            held.Add(await OpenAsync(port));
        }
    }

    /// <summary>A whole request on each of <paramref name="held"/> (the ones the proxy shed refuse it); none is read.</summary>
    private static async Task SendRequestsAsync(List<Socket> held)
    {
        var request = System.Text.Encoding.ASCII.GetBytes("GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        foreach (var socket in held)
        {
            try
            {
                await socket.SendAsync(request).WaitAsync(TimeSpan.FromSeconds(5));
            }
            catch (Exception e) when (e is SocketException or TimeoutException)
            {
                // Shed: closed or reset by the proxy.
            }
        }
    }

    /// <summary>A TCP connection to 127.0.0.1:<paramref name="port"/> that has sent nothing yet.</summary>
    private static async Task<Socket> OpenAsync(int port)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            await socket.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port));
            return socket;
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>The real binary, fresh, under <c>prlimit --nofile=400:400</c> (hard and soft: the runtime raises the soft
    /// limit to the hard one at start), in front of <paramref name="upstreamUrl"/>; warned about the low limit.</summary>
    private static async Task<(ProxyProcess Proxy, int Port, int AdminPort)> StartUnderLowLimitAsync(string upstreamUrl)
    {
        var port = StreamingAndErrorTests.FreePort();
        var adminPort = StreamingAndErrorTests.FreePort();
        var path = Path.Combine(Path.GetTempPath(), $"llmproxy-fd-{Guid.NewGuid():N}.yaml");
        await File.WriteAllTextAsync(path, ProcessConfig.Minimal(port, adminPort, upstreamUrl));
        var proxy = ProxyProcess.StartUnder(["/usr/bin/prlimit", $"--nofile={FdLimit}:{FdLimit}"], "-c", path);
        try
        {
            await proxy.WaitForOutputAsync("ready:", count: 2);
            Assert.Contains($"open-file limit {FdLimit} is below", proxy.Stdout);
            // The minimal config's one group and host: 50 upstream connections, so the forwards stop at 400 − 146.
            Assert.Contains("closed unanswered from descriptor 254 on", proxy.Stdout);
            return (proxy, port, adminPort);
        }
        catch
        {
            await proxy.DisposeAsync();
            throw;
        }
    }

    /// <summary>One HTTP/1.1 GET on an open connection, asking the proxy to close it after: the whole response as text.</summary>
    private static async Task<string> GetOnAsync(Socket socket, string path)
    {
        await socket.SendAsync(System.Text.Encoding.ASCII.GetBytes($"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"));
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        var response = new MemoryStream();
        var buffer = new byte[16 * 1024];
        int n;
        while ((n = await socket.ReceiveAsync(buffer, timeout.Token)) > 0)
        {
            response.Write(buffer, 0, n);
        }
        var text = System.Text.Encoding.ASCII.GetString(response.ToArray());
        Assert.StartsWith("HTTP/1.1 200", text);
        return text;
    }
}
