using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Text;
using LLMProxy.Mock;
using LLMProxy.Tests.Forwarding;
using LLMProxy.Tests.Infrastructure;
using Xunit.Abstractions;
using static LLMProxy.Tests.Reliability.ReliabilityKit;

namespace LLMProxy.Tests.Reliability;

/// <summary>Runs alone: it measures process-wide memory and sockets, which parallel tests would disturb.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class SoakCollection
{
    public const string Name = "Soak (runs alone)";
}

/// <summary>
/// A bounded soak: many mixed JSON/SSE requests at high concurrency through the real in-process pipeline to
/// built-in mock upstreams (plus one dead member), with injected upstream failures and client aborts. Afterwards
/// nothing may be left behind: gauges at zero, one terminal outcome and one access line per request, managed
/// memory and sockets back near their baseline.
/// </summary>
[Collection(SoakCollection.Name)]
public class SoakTests(ITestOutputHelper output)
{
    private const int Requests = 20_000;
    private const int Concurrency = 32;
    /// <summary>A leak of ~800 bytes per request would cross this; pools and caches are warmed before the baseline.</summary>
    private const long MemorySlackBytes = 16L * 1024 * 1024;
    private const int SocketSlack = 8;

    private enum Kind { Json, Sse, Status500, Status503, SseBreaks, JsonBreaks, ClientAborts }

    /// <summary>Deterministic mix: 11/20 JSON, 5/20 SSE, and 1/20 of each fault.</summary>
    private static Kind KindOf(int i) => (i % 20) switch
    {
        < 11 => Kind.Json,
        < 15 => Kind.Sse,
        15 => Kind.Status500,
        16 => Kind.Status503,
        17 => Kind.SseBreaks,
        18 => Kind.JsonBreaks,
        _ => Kind.ClientAborts,
    };

    private static string Config(IReadOnlyList<MockServer> mocks, int deadPort) => $"""
        httpServer:
          forwards:
            - name: soak
              port: 3301
              address: "127.0.0.1"
              defaultGroup: g
          admin:
            port: 9301
            address: "127.0.0.1"
        upstreams:
        {string.Join('\n', mocks.Select((m, i) => $"""
          - name: mock{i}
            url: "http://127.0.0.1:{m.Port}"
            breaker:
              threshold: 0.6
              minRequests: 50
              interval: 2000
              cooldown: 300
        """))}
          - name: dead
            url: "http://127.0.0.1:{deadPort}"
            breaker:
              threshold: 0.5
              minRequests: 3
              interval: 2000
              cooldown: 300
        upstreamGroups:
          - name: g
            upstreams:
        {string.Join('\n', mocks.Select((_, i) => $"      - name: mock{i}"))}
              - name: dead
            httpClient:
              timeout:
                connect: 2000
                request: 10000
                idle: 500
        """;

    private static HttpRequestMessage Request(int i, Kind kind)
    {
        var stream = kind is Kind.Sse or Kind.SseBreaks or Kind.ClientAborts;
        var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
        {
            Content = new StringContent($"{{\"model\":\"soak\",\"stream\":{(stream ? "true" : "false")},\"messages\":[{{\"role\":\"user\",\"content\":\"n{i}\"}}]}}",
                Encoding.UTF8, "application/json"),
        };
        request.Headers.Add("X-Request-ID", "soak-" + i);
        request.Headers.Add(MockHeaders.Chunks, kind == Kind.ClientAborts ? "40" : "4");
        request.Headers.Add(MockHeaders.ChunkIntervalMs, kind == Kind.ClientAborts ? "5" : "0");
        switch (kind)
        {
            case Kind.Status500: request.Headers.Add(MockHeaders.Status, "500"); break;
            case Kind.Status503: request.Headers.Add(MockHeaders.Status, "503"); break;
            case Kind.SseBreaks: request.Headers.Add(MockHeaders.FailMidStream, "2"); break;
            case Kind.JsonBreaks: request.Headers.Add(MockHeaders.FailMidStream, "0"); break;
        }
        return request;
    }

    /// <summary>Sends one request and checks the client saw exactly what its kind promises.</summary>
    private static async Task<string> RunOneAsync(HttpClient client, int i)
    {
        var kind = KindOf(i);
        using var request = Request(i, kind);
        HttpResponseMessage response;
        try
        {
            response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        }
        catch (HttpRequestException) when (kind is Kind.SseBreaks or Kind.JsonBreaks)
        {
            // The upstream broke right after its first bytes, and the proxy's abort overtook them: still an
            // abort the client sees, never a clean end (Kestrel drops output not yet sent when aborting).
            return "aborted-as-expected";
        }
        using var owned = response;
        switch (kind)
        {
            case Kind.Json:
            {
                var body = await response.Content.ReadAsStringAsync();
                return response.StatusCode == HttpStatusCode.OK && body.Contains("\"usage\"", StringComparison.Ordinal) ? "ok" : $"json-bad:{(int)response.StatusCode}";
            }
            case Kind.Sse:
            {
                var (text, clean, _) = await DrainAsync(response, TimeSpan.FromSeconds(20));
                return clean && text.EndsWith("data: [DONE]\n\n", StringComparison.Ordinal) ? "ok" : "sse-bad";
            }
            case Kind.Status500 or Kind.Status503:
            {
                await response.Content.ReadAsStringAsync();
                // Every member said so (or the dead one could not): the last upstream answer, unchanged.
                return (int)response.StatusCode is 500 or 503 or 502 ? "failed-as-expected" : $"status-bad:{(int)response.StatusCode}";
            }
            case Kind.SseBreaks or Kind.JsonBreaks:
            {
                var (text, clean, _) = await DrainAsync(response, TimeSpan.FromSeconds(20));
                return !clean && !text.Contains("[DONE]", StringComparison.Ordinal) ? "aborted-as-expected" : "fake-clean-end";
            }
            default:
            {
                // Read the first event, then walk away mid-stream.
                var stream = await response.Content.ReadAsStreamAsync();
                var buffer = new byte[64];
                _ = await stream.ReadAsync(buffer);
                return "client-aborted";
            }
        }
    }

    private static int SocketCount()
    {
        var count = 0;
        foreach (var fd in Directory.EnumerateFileSystemEntries("/proc/self/fd"))
        {
            try
            {
                if (new FileInfo(fd).LinkTarget?.StartsWith("socket:", StringComparison.Ordinal) == true)
                {
                    count++;
                }
            }
            catch (IOException)
            {
                // The descriptor closed while we looked.
            }
        }
        return count;
    }

    private static long ManagedBytes()
    {
        for (var i = 0; i < 3; i++)
        {
            GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
            GC.WaitForPendingFinalizers();
        }
        return GC.GetTotalMemory(forceFullCollection: true);
    }

    private static SocketsHttpHandler LoadHandler() => new()
    {
        MaxConnectionsPerServer = Concurrency,
        PooledConnectionIdleTimeout = TimeSpan.FromSeconds(30),
        // Otherwise disposing a half-read response drains it in the background to reuse the connection,
        // and the "abort" never reaches the proxy.
        MaxResponseDrainSize = 0,
    };

    [Fact]
    public async Task Soak_MixedTrafficWithFaultsAndAborts_NoLeaks_OneOutcomePerRequest()
    {
        if (!OperatingSystem.IsLinux())
        {
            return; // /proc/self/fd
        }
        var mocks = new List<MockServer>();
        for (var i = 0; i < 3; i++)
        {
            mocks.Add(await MockServer.StartAsync(new MockOptions { Port = 0, Name = "mock" + i, ChunkIntervalMs = 0 }));
        }
        await using var proxy = await EnvProxy.StartAsync(Config(mocks, StreamingAndErrorTests.FreePort()), new Dictionary<string, string>());
        var url = proxy.ForwardUrl("soak");
        var socketsAtStart = SocketCount();

        // Warm up every path (JIT, pools, connection set-up) before the baseline is taken.
        using (var warm = new HttpClient(LoadHandler()) { BaseAddress = new Uri(url), Timeout = TimeSpan.FromSeconds(30) })
        {
            for (var i = 0; i < 200; i++)
            {
                await RunOneAsync(warm, -1_000_000 + i);
            }
        }
        await AssertIdleAsync(proxy.Admin);
        var warmupCount = Sum(await proxy.Admin.GetStringAsync("/metrics"), "llmproxy_http_requests_total");
        proxy.Logs.Entries.Clear();
        var baselineBytes = ManagedBytes();

        var outcomes = new ConcurrentDictionary<string, int>();
        var next = -1;
        var clock = Stopwatch.StartNew();
        using (var client = new HttpClient(LoadHandler()) { BaseAddress = new Uri(url), Timeout = TimeSpan.FromSeconds(30) })
        {
            var workers = Enumerable.Range(0, Concurrency).Select(_ => Task.Run(async () =>
            {
                int i;
                while ((i = Interlocked.Increment(ref next)) < Requests)
                {
                    string outcome;
                    try
                    {
                        outcome = await RunOneAsync(client, i);
                    }
                    catch (Exception ex)
                    {
                        outcome = $"{KindOf(i)}-threw:{ex.GetType().Name}";
                    }
                    outcomes.AddOrUpdate(outcome, 1, (_, n) => n + 1);
                }
            })).ToArray();
            await Task.WhenAll(workers);
        }
        var elapsed = clock.Elapsed;

        // Every request reached exactly one terminal outcome: metrics and the access log agree with what was sent.
        var metrics = "";
        await WaitUntilAsync(async () =>
        {
            metrics = await proxy.Admin.GetStringAsync("/metrics");
            return Sum(metrics, "llmproxy_http_requests_total") - warmupCount >= Requests;
        }, TimeSpan.FromSeconds(10), () => Task.FromResult(Lines(metrics, "llmproxy_http_requests_total")));
        await AssertIdleAsync(proxy.Admin);
        foreach (var m in mocks)
        {
            await MockTestWait(() => m.InFlight == 0, $"mock {m.BaseUrl} still has requests in flight");
        }
        metrics = await proxy.Admin.GetStringAsync("/metrics");
        var counted = Sum(metrics, "llmproxy_http_requests_total") - warmupCount;
        var log = AccessLog.Read(proxy.Logs, Requests);
        proxy.Logs.Entries.Clear();

        // Nothing left behind: sockets (client, proxy, upstream pools, mocks) and managed memory back near baseline.
        var socketsAfter = SocketCount();
        var socketClock = Stopwatch.StartNew();
        while (socketsAfter > socketsAtStart + SocketSlack && socketClock.Elapsed < TimeSpan.FromSeconds(15))
        {
            await Task.Delay(100);
            socketsAfter = SocketCount();
        }
        var afterBytes = ManagedBytes();

        var summary = $"soak: {Requests} requests, concurrency {Concurrency}, {elapsed.TotalSeconds:F1} s ({Requests / elapsed.TotalSeconds:F0} req/s)\n" +
            "client outcomes: " + string.Join(", ", outcomes.OrderBy(kv => kv.Key).Select(kv => $"{kv.Key}={kv.Value}")) + "\n" +
            $"llmproxy_http_requests_total delta: {counted}; access lines: {log.Lines}, request ids with exactly one line: {log.IdsWithOneLine}{log.Problems}\n" +
            "access-log outcomes: " + string.Join(", ", log.Outcomes.OrderBy(kv => kv.Key).Select(kv => $"{kv.Key}={kv.Value}")) + "\n" +
            $"metrics statuses: {Lines(metrics, "llmproxy_http_requests_total").Replace('\n', ' ')}\n" +
            $"upstream errors: {Lines(metrics, "llmproxy_upstream_errors_total").Replace('\n', ' ')}\n" +
            $"sockets: start {socketsAtStart}, after {socketsAfter} (settled in {socketClock.Elapsed.TotalSeconds:F1} s)\n" +
            $"managed bytes: baseline {baselineBytes / 1024 / 1024.0:F1} MiB, after {afterBytes / 1024 / 1024.0:F1} MiB, delta {(afterBytes - baselineBytes) / 1024 / 1024.0:F1} MiB";
        output.WriteLine(summary);
        if (Environment.GetEnvironmentVariable("LLMPROXY_SOAK_REPORT") is { Length: > 0 } reportPath)
        {
            await File.WriteAllTextAsync(reportPath, summary + "\n");
        }

        foreach (var m in mocks)
        {
            await m.DisposeAsync();
        }

        // Client-side: every request got what its kind promises; nothing threw or hung.
        var fails = Requests / 20;
        Assert.True(outcomes.GetValueOrDefault("ok") == Requests * 15 / 20, summary);
        Assert.True(outcomes.GetValueOrDefault("failed-as-expected") == 2 * fails, summary);
        Assert.True(outcomes.GetValueOrDefault("aborted-as-expected") == 2 * fails, summary);
        Assert.True(outcomes.GetValueOrDefault("client-aborted") == fails, summary);
        // The proxy saw each walk-away as such (499), and each upstream break as a broken stream.
        Assert.True(log.Outcomes.GetValueOrDefault("client_aborted") == fails, summary);
        Assert.True(log.Outcomes.GetValueOrDefault("upstream_broken_stream") == 2 * fails, summary);
        Assert.Equal(Requests, counted);
        Assert.True(log.Lines == Requests && log.IdsWithOneLine == Requests, summary);
        Assert.True(socketsAfter <= socketsAtStart + SocketSlack, summary);
        Assert.True(afterBytes - baselineBytes < MemorySlackBytes, summary);
        Assert.True(Sample(metrics, "llmproxy_upstream_errors_total{group=\"g\",upstream=\"dead\",error=\"connect\"}") > 0, summary);
    }

    /// <summary>What the access log says, reduced to numbers: the lines themselves must not stay alive into the
    /// memory measurement (in an async method every local lives in the state machine).</summary>
    private sealed record AccessLog(int Lines, int IdsWithOneLine, string Problems, Dictionary<string, int> Outcomes)
    {
        public static AccessLog Read(CapturingLoggerProvider logs, int requests)
        {
            var lines = AccessLines(logs);
            logs.Entries.Clear();
            var perId = new Dictionary<string, int>(StringComparer.Ordinal);
            var outcomes = new Dictionary<string, int>(StringComparer.Ordinal);
            foreach (var line in lines)
            {
                var id = line[(line.LastIndexOf("request_id=", StringComparison.Ordinal) + "request_id=".Length)..];
                perId[id] = perId.GetValueOrDefault(id) + 1;
                var outcome = line.Split(' ').First(p => p.StartsWith("outcome=", StringComparison.Ordinal))["outcome=".Length..];
                outcomes[outcome] = outcomes.GetValueOrDefault(outcome) + 1;
            }
            var exact = Enumerable.Range(0, requests).Count(i => perId.GetValueOrDefault("soak-" + i) == 1);
            var problems = string.Join(", ", Enumerable.Range(0, requests).Where(i => perId.GetValueOrDefault("soak-" + i) != 1).Take(5)
                .Select(i => $"soak-{i} has {perId.GetValueOrDefault("soak-" + i)}"));
            return new AccessLog(lines.Count, exact, problems.Length > 0 ? " (" + problems + ")" : "", outcomes);
        }
    }

    private static async Task MockTestWait(Func<bool> condition, string message)
    {
        var clock = Stopwatch.StartNew();
        while (!condition())
        {
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(10), message);
            await Task.Delay(20);
        }
    }
}
