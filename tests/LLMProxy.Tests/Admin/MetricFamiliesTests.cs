using LLMProxy.Tests.Forwarding;
using LLMProxy.Tests.Infrastructure;

namespace LLMProxy.Tests.Admin;

public class MetricFamiliesTests
{
    [Fact]
    public async Task Metrics_AfterMixedTraffic_EveryFamilyIsRecorded()
    {
        var first429 = 1;
        await using var ups = await Upstreams.StartAsync(
            ("ok", ScriptedUpstream.Json("ok")),
            ("busy", ctx =>
            {
                if (Interlocked.Exchange(ref first429, 0) == 1)
                {
                    ctx.Response.Headers.RetryAfter = "1";
                    return ScriptedUpstream.Json("busy", 429)(ctx);
                }
                return ScriptedUpstream.Json("busy")(ctx);
            }),
            ("flaky", ScriptedUpstream.Json("flaky", 500)));
        var breaker = "breaker:\n  threshold: 0.5\n  minRequests: 2\n  cooldown: 30000";
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(ups.Yaml(_ => breaker), ups.Members(),
            forwardExtra: "ratelimit:\n  perSecond: 1\n  burst: 8"));

        for (var i = 0; i < 10; i++)
        {
            using var _ = await proxy.Client.GetAsync("/v1/models");
        }

        var metrics = await proxy.Admin.GetStringAsync("/metrics");
        string[] families =
        [
            "llmproxy_http_requests_total{", "llmproxy_http_request_duration_seconds_bucket{", "llmproxy_http_request_size_bytes_bucket{",
            "llmproxy_http_response_size_bytes_bucket{", "llmproxy_active_connections{", "llmproxy_upstream_requests_total{",
            "llmproxy_upstream_errors_total{", "llmproxy_upstream_ttfb_seconds_bucket{", "llmproxy_upstream_inflight{",
            "llmproxy_circuit_breaker_state{", "llmproxy_circuit_breaker_state_changes_total{", "llmproxy_load_balancer_selections_total{",
            "llmproxy_rate_limit_rejections_total{", "llmproxy_retries_total{", "llmproxy_upstream_cooldowns_total{",
        ];
        Assert.All(families, f => Assert.Contains(f, metrics));
        AssertSample(metrics, "llmproxy_circuit_breaker_state{upstream=\"flaky\"}", 2);
        Assert.Contains("limit_type=\"client\"", metrics);
        Assert.Contains("error=\"status_429\"", metrics);
        Assert.Contains("error=\"status_5xx\"", metrics);
    }

    [Fact]
    public async Task RequestSize_ChunkedBody_RecordsTheBytesRead_DeclaredBody_ItsLength()
    {
        await using var ups = await Upstreams.StartAsync(("ok", ScriptedUpstream.Json("ok")));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(ups.Yaml(), ups.Members()));

        // No Content-Length: HttpClient sends a stream of unknown length chunked.
        using (var chunked = await proxy.Client.PostAsync("/v1/chat/completions", new StreamContent(new NonSeekable(new byte[3000]))))
        {
            Assert.Equal(System.Net.HttpStatusCode.OK, chunked.StatusCode);
        }
        Assert.True(Assert.Single(ups["ok"].Received).Body.Length == 3000);
        using (var declared = await proxy.Client.PostAsync("/v1/chat/completions", new ByteArrayContent(new byte[700])))
        {
            Assert.Equal(System.Net.HttpStatusCode.OK, declared.StatusCode);
        }

        var metrics = await proxy.Admin.GetStringAsync("/metrics");
        MetricsText.AssertSample(metrics, "llmproxy_http_request_size_bytes_sum{forward=\"fwd\"}", 3700);
        MetricsText.AssertSample(metrics, "llmproxy_http_request_size_bytes_count{forward=\"fwd\"}", 2);
    }

    /// <summary>A stream that cannot tell its length, so the body goes out chunked.</summary>
    private sealed class NonSeekable(byte[] data) : MemoryStream(data)
    {
        public override bool CanSeek => false;
    }
}
