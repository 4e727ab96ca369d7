using System.Diagnostics;
using System.Net;
using LLMProxy.Tests.Infrastructure;
using static LLMProxy.Tests.Reliability.ReliabilityKit;

namespace LLMProxy.Tests.Reliability;

/// <summary>
/// Fault injection below HTTP: each fault of <see cref="FaultyUpstream"/> against a forward whose group has only
/// the faulty upstream ("solo"), one whose group also has a healthy one ("pair"), and an unrelated forward
/// ("other") that must keep working. The faulty upstream's breaker is shared by solo and pair.
/// </summary>
public class UpstreamFaultTests
{
    /// <summary>httpClient.timeout.request of every group: the bound on hangs and stalls. Short, but not so short
    /// that a healthy first request on a busy 2-core machine trips it.</summary>
    private const int RequestTimeoutMs = 1500;
    /// <summary>What a hang may cost beyond the configured timeout on a busy 2-core machine.</summary>
    private static readonly TimeSpan Margin = TimeSpan.FromSeconds(4);

    internal static string Config(string faultyUrl, string healthyUrl, int cooldownMs = 60000, int requestTimeoutMs = RequestTimeoutMs) => $"""
        httpServer:
          forwards:
            - name: solo
              port: 3001
              address: "127.0.0.1"
              defaultGroup: solo
            - name: pair
              port: 3002
              address: "127.0.0.1"
              defaultGroup: pair
            - name: other
              port: 3003
              address: "127.0.0.1"
              defaultGroup: other
          admin:
            port: 9001
            address: "127.0.0.1"
        upstreams:
          - name: faulty
            url: "{faultyUrl}"
            breaker:
              threshold: 0.5
              minRequests: 3
              interval: 60000
              cooldown: {cooldownMs}
              maxRequests: 1
          - name: healthy
            url: "{healthyUrl}"
        upstreamGroups:
          - name: solo
            upstreams:
              - name: faulty
            httpClient:
              timeout:
                connect: 2000
                request: {requestTimeoutMs}
          - name: pair
            upstreams:
              - name: faulty
              - name: healthy
            httpClient:
              timeout:
                connect: 2000
                request: {requestTimeoutMs}
          - name: other
            upstreams:
              - name: healthy
        """;

    private sealed class Rig : IAsyncDisposable
    {
        public required FaultyUpstream Faulty { get; init; }
        public required ScriptedUpstream Healthy { get; init; }
        public required TestProxy Proxy { get; init; }
        public required HttpClient Solo { get; init; }
        public required HttpClient Pair { get; init; }
        public required HttpClient Other { get; init; }

        public static async Task<Rig> StartAsync(FaultMode mode, int cooldownMs = 60000)
        {
            var faulty = FaultyUpstream.Start(mode);
            var healthy = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("healthy"));
            var proxy = await TestProxy.StartAsync(Config(faulty.Url, healthy.Url, cooldownMs));
            // Warm the pipeline (JIT, first connection) on the unrelated forward, so no timing below pays for it.
            using (var warm = Client(proxy.ForwardUrl("other")))
            using (var r = await warm.SendAsync(Chat()))
            {
                Assert.Equal(HttpStatusCode.OK, r.StatusCode);
            }
            return new Rig
            {
                Faulty = faulty,
                Healthy = healthy,
                Proxy = proxy,
                Solo = Client(proxy.ForwardUrl("solo")),
                Pair = Client(proxy.ForwardUrl("pair")),
                Other = Client(proxy.ForwardUrl("other")),
            };
        }

        /// <summary>The proxy still serves: the unrelated forward and the mixed group both answer 200.</summary>
        public async Task AssertStillServingAsync()
        {
            using (var other = await Other.SendAsync(Chat()))
            {
                Assert.Equal(HttpStatusCode.OK, other.StatusCode);
                Assert.Equal("healthy", other.UpstreamName());
            }
            using (var pair = await Pair.SendAsync(Chat()))
            {
                Assert.Equal(HttpStatusCode.OK, pair.StatusCode);
            }
            await AssertIdleAsync(Proxy.Admin);
        }

        public async ValueTask DisposeAsync()
        {
            Solo.Dispose();
            Pair.Dispose();
            Other.Dispose();
            await Proxy.DisposeAsync();
            await Healthy.DisposeAsync();
            await Faulty.DisposeAsync();
        }
    }

    [Theory]
    [InlineData(FaultMode.Refuse, HttpStatusCode.BadGateway, "upstream_unavailable", "connect")]
    [InlineData(FaultMode.Reset, HttpStatusCode.BadGateway, "upstream_unavailable", "reset")]
    [InlineData(FaultMode.Garbage, HttpStatusCode.BadGateway, "upstream_unavailable", "protocol")]
    [InlineData(FaultMode.HangBeforeHeaders, HttpStatusCode.GatewayTimeout, "upstream_timeout", "timeout")]
    public async Task TransportFault_FailsOverWithPeer_ErrorJsonAlone_BreakerOpens(FaultMode fault, HttpStatusCode aloneStatus, string code, string errorKind)
    {
        await using var rig = await Rig.StartAsync(fault);

        // Alone: the documented JSON error, never a hang past the timeout.
        for (var i = 0; i < 2; i++)
        {
            var clock = Stopwatch.StartNew();
            using var r = await rig.Solo.SendAsync(Chat());
            await AssertErrorAsync(r, aloneStatus, code);
            Assert.True(r.Headers.Contains("X-Request-ID"));
            Assert.InRange(clock.Elapsed, TimeSpan.Zero, TimeSpan.FromMilliseconds(RequestTimeoutMs) + Margin);
        }

        // With a healthy peer every client request succeeds: round robin starts at the faulty member, whose
        // third failure opens the breaker, and the attempt fails over to the healthy one.
        for (var i = 0; i < 2; i++)
        {
            using var r = await rig.Pair.SendAsync(Chat());
            Assert.Equal(HttpStatusCode.OK, r.StatusCode);
            Assert.Equal("healthy", r.UpstreamName());
        }

        // Three failures of three attempts: the shared breaker is open, the solo group has nothing left.
        await AssertSampleAsync(rig.Proxy.Admin, $"llmproxy_upstream_errors_total{{group=\"pair\",upstream=\"faulty\",error=\"{errorKind}\"}}", 1);
        await AssertSampleAsync(rig.Proxy.Admin, $"llmproxy_upstream_errors_total{{group=\"solo\",upstream=\"faulty\",error=\"{errorKind}\"}}", 2);
        await AssertSampleAsync(rig.Proxy.Admin, "llmproxy_circuit_breaker_state{upstream=\"faulty\"}", 2);
        await AssertSampleAsync(rig.Proxy.Admin, "llmproxy_retries_total{group=\"pair\",reason=\"" + errorKind + "\"}", 1);
        await AssertSampleAsync(rig.Proxy.Admin, $"llmproxy_http_requests_total{{forward=\"solo\",method=\"POST\",status=\"{(int)aloneStatus}\"}}", 2);
        using (var open = await rig.Solo.SendAsync(Chat()))
        {
            await AssertErrorAsync(open, HttpStatusCode.ServiceUnavailable, "no_available_upstream");
            Assert.NotNull(open.Headers.RetryAfter);
        }
        using (var health = await rig.Proxy.Admin.GetAsync("/health"))
        {
            // The solo group has nothing left: /health says so, naming the open breaker.
            Assert.Equal(HttpStatusCode.ServiceUnavailable, health.StatusCode);
            Assert.Contains("\"name\":\"faulty\",\"host\":", await health.Content.ReadAsStringAsync());
            Assert.Contains("\"breaker\":\"open\"", await health.Content.ReadAsStringAsync());
        }

        await rig.AssertStillServingAsync();
        if (fault == FaultMode.HangBeforeHeaders)
        {
            // The proxy hung up on every hung attempt: no upstream connection is left waiting.
            await rig.Faulty.WaitUntilAsync(f => f.PeerGaveUp == 3 && f.OpenConnections == 0, TimeSpan.FromSeconds(10));
        }
    }

    [Theory]
    [InlineData(FaultMode.StallMidStream, "timeout")]
    [InlineData(FaultMode.CloseMidSse, "stream")]
    public async Task StreamFault_ClientStreamAborted_CountsAsFailure_BreakerOpens(FaultMode fault, string errorKind)
    {
        await using var rig = await Rig.StartAsync(fault);
        rig.Faulty.SseEvents = 2;

        for (var i = 0; i < 3; i++)
        {
            var clock = Stopwatch.StartNew();
            using var r = await rig.Solo.SendAsync(Chat(stream: true), HttpCompletionOption.ResponseHeadersRead);
            Assert.Equal(HttpStatusCode.OK, r.StatusCode);
            var (text, clean, error) = await DrainAsync(r, TimeSpan.FromMilliseconds(RequestTimeoutMs) + Margin);
            // The events sent before the fault arrived, then the body broke: no fake clean end.
            Assert.Contains("data: {\"n\":1}", text);
            Assert.DoesNotContain("[DONE]", text);
            Assert.False(clean, "the client saw a clean end of a broken stream");
            Assert.NotNull(error);
            Assert.InRange(clock.Elapsed, TimeSpan.Zero, TimeSpan.FromMilliseconds(RequestTimeoutMs) + Margin);
        }

        await AssertSampleAsync(rig.Proxy.Admin, $"llmproxy_upstream_errors_total{{group=\"solo\",upstream=\"faulty\",error=\"{errorKind}\"}}", 3);
        await AssertSampleAsync(rig.Proxy.Admin, "llmproxy_circuit_breaker_state{upstream=\"faulty\"}", 2);
        await WaitUntilAsync(() => Task.FromResult(AccessLines(rig.Proxy.Logs).Count(l => l.Contains("outcome=upstream_broken_stream")) == 3),
            TimeSpan.FromSeconds(5), () => Task.FromResult(string.Join("\n", AccessLines(rig.Proxy.Logs))));
        await rig.AssertStillServingAsync();
        if (fault == FaultMode.StallMidStream)
        {
            await rig.Faulty.WaitUntilAsync(f => f.PeerGaveUp == 3 && f.OpenConnections == 0, TimeSpan.FromSeconds(10));
        }
    }

    [Theory]
    [InlineData(500)]
    [InlineData(503)]
    public async Task Status5xxBurst_HiddenByFailover_AloneClientGetsUpstreamAnswer_BreakerOpens(int status)
    {
        await using var rig = await Rig.StartAsync(FaultMode.Status);
        rig.Faulty.Status = status;

        for (var i = 0; i < 2; i++)
        {
            using var r = await rig.Solo.SendAsync(Chat());
            // Retries exhausted: the last upstream answer as the upstream sent it.
            Assert.Equal(status, (int)r.StatusCode);
            Assert.Equal("faulty", r.UpstreamName());
            Assert.Contains($"faulty says {status}", await r.Content.ReadAsStringAsync());
        }
        for (var i = 0; i < 2; i++)
        {
            using var r = await rig.Pair.SendAsync(Chat());
            Assert.Equal(HttpStatusCode.OK, r.StatusCode);
            Assert.Equal("healthy", r.UpstreamName());
        }

        await AssertSampleAsync(rig.Proxy.Admin, "llmproxy_upstream_errors_total{group=\"pair\",upstream=\"faulty\",error=\"status_5xx\"}", 1);
        await AssertSampleAsync(rig.Proxy.Admin, "llmproxy_upstream_errors_total{group=\"solo\",upstream=\"faulty\",error=\"status_5xx\"}", 2);
        await AssertSampleAsync(rig.Proxy.Admin, "llmproxy_circuit_breaker_state{upstream=\"faulty\"}", 2);
        await rig.AssertStillServingAsync();
    }

    [Fact]
    public async Task Status429Burst_ParksUpstream_NotBreaker_AloneGets429ThenUpstreamRateLimited()
    {
        await using var rig = await Rig.StartAsync(FaultMode.Status);
        rig.Faulty.Status = 429;

        using (var alone = await rig.Solo.SendAsync(Chat()))
        {
            // Nobody else to ask: the upstream's own 429 (with its Retry-After) reaches the client.
            Assert.Equal(HttpStatusCode.TooManyRequests, alone.StatusCode);
            Assert.Equal("faulty", alone.UpstreamName());
        }
        using (var parked = await rig.Solo.SendAsync(Chat()))
        {
            await AssertErrorAsync(parked, HttpStatusCode.TooManyRequests, "upstream_rate_limited");
            Assert.True(parked.Headers.RetryAfter?.Delta >= TimeSpan.FromSeconds(1));
        }
        for (var i = 0; i < 4; i++)
        {
            using var r = await rig.Pair.SendAsync(Chat());
            Assert.Equal(HttpStatusCode.OK, r.StatusCode);
            Assert.Equal("healthy", r.UpstreamName());
        }
        Assert.Equal(1, rig.Faulty.Requests);

        await AssertSampleAsync(rig.Proxy.Admin, "llmproxy_upstream_errors_total{group=\"solo\",upstream=\"faulty\",error=\"status_429\"}", 1);
        await AssertSampleAsync(rig.Proxy.Admin, "llmproxy_upstream_cooldowns_total{upstream=\"faulty\"}", 1);
        await AssertSampleAsync(rig.Proxy.Admin, "llmproxy_circuit_breaker_state{upstream=\"faulty\"}", 0);
        await rig.AssertStillServingAsync();

        // Retry-After: 1 has passed: the account is back.
        rig.Faulty.SetMode(FaultMode.Ok);
        await WaitUntilAsync(async () =>
        {
            using var r = await rig.Solo.SendAsync(Chat());
            return r.StatusCode == HttpStatusCode.OK && r.UpstreamName() == "faulty";
        }, TimeSpan.FromSeconds(10));
    }

    [Fact]
    public async Task RefusingUpstream_Recovers_BreakerClosesAfterCooldown_TrafficReturns()
    {
        await using var rig = await Rig.StartAsync(FaultMode.Refuse, cooldownMs: 800);

        for (var i = 0; i < 3; i++)
        {
            using var r = await rig.Solo.SendAsync(Chat());
            await AssertErrorAsync(r, HttpStatusCode.BadGateway, "upstream_unavailable");
        }
        await AssertSampleAsync(rig.Proxy.Admin, "llmproxy_circuit_breaker_state{upstream=\"faulty\"}", 2);

        rig.Faulty.SetMode(FaultMode.Ok);
        await WaitUntilAsync(async () =>
        {
            using var r = await rig.Solo.SendAsync(Chat());
            return r.StatusCode == HttpStatusCode.OK && r.UpstreamName() == "faulty";
        }, TimeSpan.FromSeconds(10));

        await AssertSampleAsync(rig.Proxy.Admin, "llmproxy_circuit_breaker_state{upstream=\"faulty\"}", 0);
        await AssertSampleAsync(rig.Proxy.Admin, "llmproxy_circuit_breaker_state_changes_total{upstream=\"faulty\",from=\"closed\",to=\"open\"}", 1);
        await AssertSampleAsync(rig.Proxy.Admin, "llmproxy_circuit_breaker_state_changes_total{upstream=\"faulty\",from=\"half_open\",to=\"closed\"}", 1);
        // Back in rotation for the mixed group too.
        var seen = new HashSet<string>();
        for (var i = 0; i < 4; i++)
        {
            using var r = await rig.Pair.SendAsync(Chat());
            Assert.Equal(HttpStatusCode.OK, r.StatusCode);
            seen.Add(r.UpstreamName());
        }
        Assert.Contains("faulty", seen);
        await rig.AssertStillServingAsync();
    }

    [Fact]
    public async Task HealthyStream_ThroughFaultyUpstreamInOkSseMode_EndsCleanWithDone()
    {
        // Control for the stream-fault tests: the same raw upstream, well behaved, ends cleanly.
        await using var rig = await Rig.StartAsync(FaultMode.OkSse);

        using var r = await rig.Solo.SendAsync(Chat(stream: true), HttpCompletionOption.ResponseHeadersRead);
        var (text, clean, _) = await DrainAsync(r, TimeSpan.FromSeconds(10));

        Assert.True(clean);
        Assert.EndsWith("data: [DONE]\n\n", text);
        Assert.Equal("text/event-stream", r.Content.Headers.ContentType?.MediaType);
        await AssertIdleAsync(rig.Proxy.Admin);
    }
}
