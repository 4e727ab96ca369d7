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
}
