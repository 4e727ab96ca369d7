using LLMProxy.Mock;
using LLMProxy.Tests.Infrastructure;

namespace LLMProxy.Tests.Forwarding;

public class TokenUsageTests
{
    [Fact]
    public async Task TokenUsage_FromJsonAndSse_CountedPerUpstream()
    {
        await using var mock = await MockServer.StartAsync(new MockOptions { Port = 0, Chunks = 4, ChunkIntervalMs = 1 });
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config($"- name: m\n  url: \"{mock.BaseUrl.ToString().TrimEnd('/')}\"", "- name: m"));

        var json = await (await proxy.Client.PostAsync("/v1/chat/completions", new StringContent("{\"model\":\"x\",\"messages\":[]}"))).Content.ReadAsStringAsync();
        var sse = await (await proxy.Client.PostAsync("/v1/chat/completions", new StringContent("{\"model\":\"x\",\"stream\":true,\"messages\":[]}"))).Content.ReadAsStringAsync();

        using var jsonDoc = System.Text.Json.JsonDocument.Parse(json);
        var completion = jsonDoc.RootElement.GetProperty("usage").GetProperty("completion_tokens").GetInt64();
        Assert.Contains("[DONE]", sse);
        var metrics = await proxy.Admin.GetStringAsync("/metrics");
        // Both answers report the same usage (same chunk count), so the counter holds twice the JSON figure.
        Assert.Contains($"llmproxy_tokens_total{{upstream=\"m\",type=\"completion\"}} {completion * 2}", metrics);
        Assert.True(Sample(metrics, "llmproxy_tokens_total{upstream=\"m\",type=\"prompt\"}") > 0);
    }
}
