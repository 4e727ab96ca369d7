using System.Net;
using System.Net.Http.Headers;
using LLMProxy.Tests.Forwarding;
using LLMProxy.Tests.Infrastructure;

namespace LLMProxy.Tests.Admin;

public class AdminTests
{
    private static string One(string url) => $"""
        - name: u1
          url: "{url}"
          auth:
            type: bearer
            token: "sk-admin-test-secret-7777"
          breaker:
            threshold: 0.5
        """;

    [Fact]
    public async Task Ping_ReturnsSuccessText()
    {
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u1"));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(One(upstream.Url), "- name: u1"));

        using var response = await proxy.Admin.GetAsync("/ping");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("success", await response.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task Metrics_RecordRequestsWithBoundedLabels_NoPathsOrSecrets()
    {
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u1"));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(One(upstream.Url), "- name: u1"));

        for (var i = 0; i < 3; i++)
        {
            using var r = await proxy.Client.GetAsync($"/v1/unique-path-{i}");
        }
        using var odd = await proxy.Client.SendAsync(new HttpRequestMessage(new HttpMethod("BREW"), "/coffee"));

        var metrics = await proxy.Admin.GetStringAsync("/metrics");
        AssertSample(metrics, "llmproxy_http_requests_total{forward=\"fwd\",method=\"GET\",status=\"200\"}", 3);
        Assert.Contains("method=\"OTHER\"", metrics);
        AssertSample(metrics, "llmproxy_http_request_duration_seconds_count{forward=\"fwd\",method=\"GET\",status=\"200\"}", 3);
        AssertSample(metrics, "llmproxy_upstream_requests_total{group=\"g\",upstream=\"u1\",status_code=\"200\"}", 4);
        AssertSample(metrics, "llmproxy_active_connections{forward=\"fwd\"}", 0);
        AssertSample(metrics, "llmproxy_circuit_breaker_state{upstream=\"u1\"}", 0);
        Assert.DoesNotContain("unique-path", metrics);
        Assert.DoesNotContain("sk-admin-test-secret-7777", metrics);
        Assert.DoesNotContain("127.0.0.1", metrics);
    }

    [Theory]
    [InlineData("/debug/pprof")]
    [InlineData("/swagger")]
    [InlineData("/api/v1/reload")]
    public async Task UnknownAdminPaths_NotFound(string path)
    {
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u1"));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(One(upstream.Url), "- name: u1"));

        using var response = await proxy.Admin.GetAsync(path);
        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
    }

    [Fact]
    public async Task Health_RequiresTokenWhenSet_PingAndMetricsStayOpen()
    {
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u1"));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(One(upstream.Url), "- name: u1", adminExtra: "token: \"admin-token-abc\""));

        using var anonymous = await proxy.Admin.GetAsync("/health");
        await StreamingAndErrorTests.AssertErrorBody(anonymous, HttpStatusCode.Unauthorized, "unauthorized");
        using var wrong = new HttpRequestMessage(HttpMethod.Get, "/health");
        wrong.Headers.Authorization = new AuthenticationHeaderValue("Bearer", "nope");
        Assert.Equal(HttpStatusCode.Unauthorized, (await proxy.Admin.SendAsync(wrong)).StatusCode);
        using var right = new HttpRequestMessage(HttpMethod.Get, "/health");
        right.Headers.Authorization = new AuthenticationHeaderValue("Bearer", "admin-token-abc");
        using var ok = await proxy.Admin.SendAsync(right);
        Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
        var body = await ok.Content.ReadAsStringAsync();
        Assert.Contains("\"u1\"", body);
        Assert.DoesNotContain("sk-admin-test-secret-7777", body);
        Assert.Equal(HttpStatusCode.OK, (await proxy.Admin.GetAsync("/ping")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await proxy.Admin.GetAsync("/metrics")).StatusCode);
    }
}
