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

    /// <summary>Answers that cannot be passed on as HTTP, by name (the 70 KB head would make an unreadable test name).</summary>
    private static readonly Dictionary<string, string> Unpassable = new()
    {
        ["status 999"] = "HTTP/1.1 999 Whatever\r\nContent-Length: 2\r\n\r\n{}",
        ["status 600"] = "HTTP/1.1 600 Whatever\r\nContent-Length: 2\r\n\r\n{}",
        ["status 099"] = "HTTP/1.1 099 Whatever\r\nContent-Length: 2\r\n\r\n{}",
        ["status 000"] = "HTTP/1.1 000 Whatever\r\nContent-Length: 2\r\n\r\n{}",
        ["101 never asked for"] = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        ["204 with a Content-Length"] = "HTTP/1.1 204 No Content\r\nContent-Length: 2\r\n\r\n{}",
        ["205 with a body"] = "HTTP/1.1 205 Reset Content\r\nContent-Length: 2\r\n\r\n{}",
        ["205 with a chunked body"] = "HTTP/1.1 205 Reset Content\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        ["non-ASCII header value"] = "HTTP/1.1 200 OK\r\nX-Note: caf\u00c3\u00a9\r\nContent-Length: 2\r\n\r\n{}",
        ["non-ASCII Content-Type"] = "HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=caf\u00c3\u00a9\r\nContent-Length: 2\r\n\r\n{}",
        ["control character in header value"] = "HTTP/1.1 200 OK\r\nX-Note: a\u0001b\r\nContent-Length: 2\r\n\r\n{}",
        ["DEL in header value"] = "HTTP/1.1 200 OK\r\nX-Note: a\u007fb\r\nContent-Length: 2\r\n\r\n{}",
        ["header name not a token"] = "HTTP/1.1 200 OK\r\nX{y}: 1\r\nContent-Length: 2\r\n\r\n{}",
        ["Content-Length twice, differing"] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        ["negative Content-Length"] = "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n{}",
        ["response head over 64 KB"] = "HTTP/1.1 200 OK\r\nX-Big: " + new string('b', 70 * 1024) + "\r\nContent-Length: 2\r\n\r\n{}",
    };

    public static TheoryData<string> UnpassableShapes => [.. Unpassable.Keys];

    /// <summary>
    /// An answer the proxy cannot pass on as HTTP is the upstream's protocol error: the client never sees a broken
    /// status line, a Kestrel 500 or an empty 502, the attempt is counted against that upstream (breaker, metric) and
    /// retried elsewhere, and nothing is charged to the client.
    /// </summary>
    [Theory]
    [MemberData(nameof(UnpassableShapes))]
    public async Task UnpassableAnswer_IsUpstreamProtocolError_FailsOver_NeverReachesClient(string shape)
    {
        await using var rig = await Rig.StartAsync(FaultMode.Raw);
        rig.Faulty.RawAnswer = Closing(Unpassable[shape]);

        for (var i = 0; i < 2; i++)
        {
            using var r = await rig.Solo.SendAsync(Chat());
            await AssertErrorAsync(r, HttpStatusCode.BadGateway, "upstream_unavailable");
        }
        for (var i = 0; i < 2; i++)
        {
            using var r = await rig.Pair.SendAsync(Chat());
            Assert.Equal(HttpStatusCode.OK, r.StatusCode);
            Assert.Equal("healthy", r.UpstreamName());
        }

        await AssertSampleAsync(rig.Proxy.Admin, "llmproxy_upstream_errors_total{group=\"solo\",upstream=\"faulty\",error=\"protocol\"}", 2);
        await AssertSampleAsync(rig.Proxy.Admin, "llmproxy_upstream_errors_total{group=\"pair\",upstream=\"faulty\",error=\"protocol\"}", 1);
        await AssertSampleAsync(rig.Proxy.Admin, "llmproxy_retries_total{group=\"pair\",reason=\"protocol\"}", 1);
        await AssertSampleAsync(rig.Proxy.Admin, "llmproxy_circuit_breaker_state{upstream=\"faulty\"}", 2);
        var access = AccessLines(rig.Proxy.Logs);
        Assert.Equal(2, access.Count(l => l.Contains(" 502 forward=solo upstream=faulty attempts=1 ", StringComparison.Ordinal)
            && l.Contains("outcome=upstream_unavailable", StringComparison.Ordinal)));
        Assert.DoesNotContain(access, l => l.Contains("outcome=client_aborted", StringComparison.Ordinal));
        // Kestrel's "unhandled exception" line (a response it could not finish) never appears.
        Assert.DoesNotContain(rig.Proxy.Logs.Entries, e => e.Level >= Microsoft.Extensions.Logging.LogLevel.Error);
        await rig.AssertStillServingAsync();
    }

    /// <summary>
    /// The raw upstream closes after every answer, so the final answer says <c>Connection: close</c>: a pooled
    /// connection the upstream has already closed would otherwise fail a later attempt as a reset, which is not what
    /// these tests are about.
    /// </summary>
    private static byte[] Closing(string answer)
    {
        var line = answer.IndexOf("\r\n", answer.LastIndexOf("HTTP/1.", StringComparison.Ordinal), StringComparison.Ordinal) + 2;
        return System.Text.Encoding.Latin1.GetBytes(answer[..line] + "Connection: close\r\n" + answer[line..]);
    }

    /// <summary>One forward in front of a raw upstream answering <paramref name="answer"/> (then <paramref name="tail"/>).</summary>
    private static async Task<(FaultyUpstream Faulty, TestProxy Proxy)> StartRawAsync(string answer, string? tail = null)
    {
        var faulty = FaultyUpstream.Start(FaultMode.Raw);
        faulty.RawAnswer = Closing(answer);
        faulty.RawTail = tail is null ? null : System.Text.Encoding.Latin1.GetBytes(tail);
        var proxy = await TestProxy.StartAsync(TestProxy.Config($"- name: faulty\n  url: \"{faulty.Url}\"", "- name: faulty",
            groupExtra: $"httpClient:\n  timeout:\n    request: {RequestTimeoutMs}"));
        return (faulty, proxy);
    }

    [Theory]
    [InlineData("O\u0001K\u001b[2J", "OK")]
    [InlineData("Okay caf\u00c3\u00a9", "OK")]
    [InlineData("Fine Thanks", "Fine Thanks")]
    public async Task ReasonPhrase_NotPrintableAscii_ReplacedByTheStandardOne(string reason, string seen)
    {
        var (faulty, proxy) = await StartRawAsync($"HTTP/1.1 200 {reason}\r\nContent-Length: 2\r\n\r\n{{}}");
        await using var _ = faulty;
        await using var __ = proxy;
        await using var raw = await RawClient.ConnectAsync(RawClient.PortOf(proxy.ForwardUrl()));
        await raw.SendAsync("GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n");
        var response = await raw.ReadResponseAsync(TimeSpan.FromSeconds(10));

        Assert.Equal("HTTP/1.1 200 " + seen, response.Head.Split("\r\n")[0]);
        Assert.Equal("{}", response.BodyText);
    }

    [Theory]
    [InlineData("HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")]
    [InlineData("HTTP/1.1 100 Continue\r\n\r\n")]
    [InlineData("HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 103 Early Hints\r\n\r\n")]
    public async Task InformationalAnswers_Skipped_FinalAnswerPassedOn(string informational)
    {
        var (faulty, proxy) = await StartRawAsync(informational + "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}");
        await using var _ = faulty;
        await using var __ = proxy;
        using var r = await proxy.Client.SendAsync(Chat());

        Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        Assert.Equal("{\"ok\":true}", await r.Content.ReadAsStringAsync());
        Assert.False(r.Headers.Contains("Link"));
        Assert.Equal(0, Sum(await proxy.Admin.GetStringAsync("/metrics"), "llmproxy_upstream_errors_total"));
    }

    /// <summary>A body that breaks its own framing after it started is a broken stream: the client sees the bytes
    /// that came first and then an abort, never a clean end; the upstream is charged with error="stream".</summary>
    [Theory]
    [InlineData("Content-Length longer than the body", "Content-Length: 50\r\n\r\ndata: 1\n\n", "")]
    [InlineData("malformed chunk size", "Transfer-Encoding: chunked\r\n\r\n9\r\ndata: 1\n\n\r\n", "zz\r\nxx\r\n0\r\n\r\n")]
    [InlineData("chunk longer than its size", "Transfer-Encoding: chunked\r\n\r\n9\r\ndata: 1\n\n\r\n", "2\r\n{}}}}\r\n0\r\n\r\n")]
    public async Task BrokenBodyFraming_ClientAborted_CountedAsStreamFailure(string shape, string rest, string tail)
    {
        var (faulty, proxy) = await StartRawAsync("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n" + rest, tail);
        await using var _ = faulty;
        await using var __ = proxy;
        using var r = await proxy.Client.SendAsync(Chat(stream: true), HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        var (text, clean, _) = await DrainAsync(r, TimeSpan.FromSeconds(10));

        Assert.Contains("data: 1", text);
        Assert.False(clean, shape + ": the client saw a clean end of a broken body");
        await AssertSampleAsync(proxy.Admin, "llmproxy_upstream_errors_total{group=\"g\",upstream=\"faulty\",error=\"stream\"}", 1);
        await WaitUntilAsync(() => Task.FromResult(AccessLines(proxy.Logs).Any(l => l.Contains("outcome=upstream_broken_stream"))),
            TimeSpan.FromSeconds(5), () => Task.FromResult(string.Join("\n", AccessLines(proxy.Logs))));
    }

    [Fact]
    public async Task ContentLengthShorterThanBody_ClientGetsTheDeclaredBytes_NothingMore()
    {
        var (faulty, proxy) = await StartRawAsync("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n{\"ok\":true,\"smuggled\":1}");
        await using var _ = faulty;
        await using var __ = proxy;
        for (var i = 0; i < 2; i++)
        {
            using var r = await proxy.Client.SendAsync(Chat());
            Assert.Equal(HttpStatusCode.OK, r.StatusCode);
            Assert.Equal("{\"ok\"", await r.Content.ReadAsStringAsync());
        }
        Assert.Equal(0, Sum(await proxy.Admin.GetStringAsync("/metrics"), "llmproxy_upstream_errors_total"));
    }

    [Fact]
    public async Task HopByHopResponseHeaders_Stripped_EndToEndKept()
    {
        var (faulty, proxy) = await StartRawAsync("HTTP/1.1 200 OK\r\nConnection: close, X-Secret\r\nX-Secret: s3cr3t\r\n" +
            "Keep-Alive: timeout=5\r\nUpgrade: h2c\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nTrailer: X-Checksum\r\n" +
            "Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nX-Kept: yes\r\nContent-Length: 2\r\n\r\n{}");
        await using var _ = faulty;
        await using var __ = proxy;
        await using var raw = await RawClient.ConnectAsync(RawClient.PortOf(proxy.ForwardUrl()));
        await raw.SendAsync("GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n");
        var response = await raw.ReadResponseAsync(TimeSpan.FromSeconds(10));

        Assert.Equal(200, response.Status);
        var names = response.Head.Split("\r\n").Skip(1).Select(l => l[..l.IndexOf(':', StringComparison.Ordinal)]).ToList();
        foreach (var hop in new[] { "Connection", "X-Secret", "Keep-Alive", "Upgrade", "Proxy-Connection", "TE", "Trailer" })
        {
            Assert.DoesNotContain(hop, names, StringComparer.OrdinalIgnoreCase);
        }
        Assert.Equal(2, names.Count(n => n.Equals("Set-Cookie", StringComparison.OrdinalIgnoreCase)));
        Assert.Contains("X-Kept", names, StringComparer.OrdinalIgnoreCase);
    }
}
