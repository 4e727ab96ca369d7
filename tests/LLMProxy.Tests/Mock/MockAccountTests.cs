using System.Diagnostics;
using System.Net;
using System.Text.Json;
using LLMProxy.Mock;
using LLMProxy.Tests.Infrastructure;
using static LLMProxy.Tests.Mock.MockTestSupport;

namespace LLMProxy.Tests.Mock;

/// <summary>The mock as an account: usage with details, include_usage honoured, Anthropic messages, and per-request
/// scripting of provider errors and rate-limit headers.</summary>
public class MockAccountTests
{
    private static HttpRequestMessage Scripted(string body, string path = "/v1/chat/completions", params (string Name, string Value)[] headers)
    {
        var request = Chat(body, path);
        foreach (var (name, value) in headers)
            request.Headers.TryAddWithoutValidation(name, value);
        return request;
    }

    [Fact]
    public async Task ChatStream_IncludeUsage_UsageOnlyChunkLast_WithCachedAndReasoning()
    {
        await using var server = await StartAsync(new MockOptions { Chunks = 3, ChunkIntervalMs = 0 });
        using var client = Client(server);

        using var response = await client.SendAsync(Scripted("{\"model\":\"m\",\"stream\":true,\"stream_options\":{\"include_usage\":true},\"messages\":[]}",
            headers: [(MockHeaders.CachedTokens, "8"), (MockHeaders.ReasoningTokens, "5")]));
        var events = await ReadEventsAsync(response, Stopwatch.StartNew());

        Assert.Equal("[DONE]", events[^1].Data);
        using var usageChunk = JsonDocument.Parse(events[^2].Data);
        Assert.Equal(0, usageChunk.RootElement.GetProperty("choices").GetArrayLength());
        var usage = usageChunk.RootElement.GetProperty("usage");
        Assert.Equal(3 + 5, usage.GetProperty("completion_tokens").GetInt32());
        Assert.Equal(8, usage.GetProperty("prompt_tokens_details").GetProperty("cached_tokens").GetInt32());
        Assert.Equal(5, usage.GetProperty("completion_tokens_details").GetProperty("reasoning_tokens").GetInt32());
        Assert.Equal(usage.GetProperty("prompt_tokens").GetInt32() + 8, usage.GetProperty("total_tokens").GetInt32());
        Assert.All(events.SkipLast(2), e => Assert.DoesNotContain("\"usage\"", e.Data, StringComparison.Ordinal));
    }

    [Fact]
    public async Task ChatJson_UsageHasDetails()
    {
        await using var server = await StartAsync(new MockOptions { Chunks = 2 });
        using var client = Client(server);

        using var response = await client.SendAsync(Scripted("{\"model\":\"m\",\"messages\":[]}", headers: [(MockHeaders.CachedTokens, "1000000")]));
        using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        var usage = doc.RootElement.GetProperty("usage");
        // Cached is a part of the prompt, never more.
        Assert.Equal(usage.GetProperty("prompt_tokens").GetInt32(), usage.GetProperty("prompt_tokens_details").GetProperty("cached_tokens").GetInt32());
        Assert.Equal(0, usage.GetProperty("completion_tokens_details").GetProperty("reasoning_tokens").GetInt32());
    }

    [Fact]
    public async Task AnthropicJson_MessageWithUsage()
    {
        await using var server = await StartAsync(new MockOptions { Chunks = 4 });
        using var client = Client(server);

        using var response = await client.SendAsync(Scripted("{\"model\":\"claude-x\",\"max_tokens\":64,\"messages\":[]}", "/v1/messages", (MockHeaders.CachedTokens, "2")));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        var root = doc.RootElement;
        Assert.Equal("message", root.GetProperty("type").GetString());
        Assert.Equal("claude-x", root.GetProperty("model").GetString());
        Assert.Equal("This is a streamed", root.GetProperty("content")[0].GetProperty("text").GetString());
        Assert.Equal("end_turn", root.GetProperty("stop_reason").GetString());
        var usage = root.GetProperty("usage");
        Assert.Equal(4, usage.GetProperty("output_tokens").GetInt32());
        Assert.Equal(2, usage.GetProperty("cache_read_input_tokens").GetInt32());
        Assert.True(usage.GetProperty("input_tokens").GetInt32() > 0);
    }

    [Fact]
    public async Task AnthropicStream_EventSequence_UsageInStartAndDelta()
    {
        await using var server = await StartAsync(new MockOptions { Chunks = 3, ChunkIntervalMs = 0 });
        using var client = Client(server);

        using var response = await client.SendAsync(Scripted("{\"model\":\"claude-x\",\"stream\":true,\"messages\":[]}", "/v1/messages"), HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        var text = await response.Content.ReadAsStringAsync();
        var names = text.Split('\n').Where(l => l.StartsWith("event: ", StringComparison.Ordinal)).Select(l => l["event: ".Length..]).ToArray();
        Assert.Equal(["message_start", "content_block_start", "ping", "content_block_delta", "content_block_delta", "content_block_delta",
            "content_block_stop", "message_delta", "message_stop"], names);
        var data = text.Split('\n').Where(l => l.StartsWith("data: ", StringComparison.Ordinal)).Select(l => JsonDocument.Parse(l["data: ".Length..]).RootElement).ToArray();
        Assert.Equal(1, data[0].GetProperty("message").GetProperty("usage").GetProperty("output_tokens").GetInt32());
        Assert.True(data[0].GetProperty("message").GetProperty("usage").GetProperty("input_tokens").GetInt32() > 0);
        Assert.Equal(3, data[^2].GetProperty("usage").GetProperty("output_tokens").GetInt32());
        Assert.Equal("This is a", string.Concat(data.Where(d => d.GetProperty("type").GetString() == "content_block_delta").Select(d => d.GetProperty("delta").GetProperty("text").GetString())));
    }

    [Theory]
    [InlineData("/v1/chat/completions", "insufficient_quota", null, 429, "{\"error\":{\"message\":\"You exceeded your current quota, please check your plan and billing details.\",\"type\":\"insufficient_quota\",\"param\":null,\"code\":\"insufficient_quota\"}}")]
    [InlineData("/v1/messages", "billing_error", null, 402, "{\"type\":\"error\",\"error\":{\"type\":\"billing_error\",\"message\":\"Your credit balance is too low to access the Anthropic API.\"}}")]
    [InlineData("/v1/messages", "permission_error", "429", 429, "{\"type\":\"error\",\"error\":{\"type\":\"permission_error\",\"message\":\"Your API key does not have permission to use the specified resource.\"}}")]
    [InlineData("/v1/messages", null, "401", 401, "{\"type\":\"error\",\"error\":{\"type\":\"authentication_error\",\"message\":\"mock 'mock' answered 401\"}}")]
    [InlineData("/v1/chat/completions", null, "403", 403, "{\"error\":{\"message\":\"mock 'mock' answered 403\",\"type\":\"permission_error\",\"param\":null,\"code\":\"permission_denied\"}}")]
    public async Task ScriptedErrors_ProvidersRealBodies(string path, string? error, string? status, int expectedStatus, string expectedBody)
    {
        await using var server = await StartAsync();
        using var client = Client(server);
        var headers = new List<(string, string)>();
        if (error is not null) headers.Add((MockHeaders.Error, error));
        if (status is not null) headers.Add((MockHeaders.Status, status));

        using var response = await client.SendAsync(Scripted("{\"model\":\"m\"}", path, [.. headers]));
        Assert.Equal(expectedStatus, (int)response.StatusCode);
        Assert.Equal(expectedBody, await response.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task ScriptedRateLimitHeaders_EchoedInEachProvidersForm()
    {
        var time = new Microsoft.Extensions.Time.Testing.FakeTimeProvider(DateTimeOffset.Parse("2026-01-02T03:04:05Z", System.Globalization.CultureInfo.InvariantCulture));
        await using var server = await StartAsync(new MockOptions { TimeProvider = time, ChunkIntervalMs = 0 });
        using var client = Client(server);
        (string, string)[] script = [("X-Mock-Ratelimit-Remaining-Tokens", "1200"), ("X-Mock-Ratelimit-Reset-Tokens", "6m0s"), ("X-Mock-Ratelimit-Remaining-Requests", "0")];

        using var openai = await client.SendAsync(Scripted("{}", "/v1/chat/completions", script));
        Assert.Equal("1200", openai.Headers.GetValues("x-ratelimit-remaining-tokens").Single());
        Assert.Equal("6m0s", openai.Headers.GetValues("x-ratelimit-reset-tokens").Single());
        Assert.Equal("0", openai.Headers.GetValues("x-ratelimit-remaining-requests").Single());

        using var anthropic = await client.SendAsync(Scripted("{}", "/v1/messages", [.. script, (MockHeaders.Status, "429")]));
        Assert.Equal(HttpStatusCode.TooManyRequests, anthropic.StatusCode);
        Assert.Equal("1200", anthropic.Headers.GetValues("anthropic-ratelimit-tokens-remaining").Single());
        Assert.Equal("2026-01-02T03:10:05Z", anthropic.Headers.GetValues("anthropic-ratelimit-tokens-reset").Single());
        Assert.Equal("0", anthropic.Headers.GetValues("anthropic-ratelimit-requests-remaining").Single());
    }

    /// <summary>End to end: the proxy asks the mock for usage on a client's behalf, the mock sends its usage chunk only
    /// then, the client never sees it, and both providers' streams are counted per type.</summary>
    [Fact]
    public async Task ThroughProxy_UsageInjectedAndHidden_AnthropicCounted()
    {
        await using var mock = await StartAsync(new MockOptions { Chunks = 4, ChunkIntervalMs = 0 });
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config($"- name: m\n  url: \"{mock.BaseUrl.ToString().TrimEnd('/')}\"", "- name: m"));

        using var chat = Scripted("{\"model\":\"m\",\"stream\":true,\"messages\":[]}", headers: [(MockHeaders.CachedTokens, "3"), (MockHeaders.ReasoningTokens, "2")]);
        using var response = await proxy.Client.SendAsync(chat);
        var sse = await response.Content.ReadAsStringAsync();
        Assert.DoesNotContain("\"usage\"", sse, StringComparison.Ordinal);
        Assert.EndsWith("data: [DONE]\n\n", sse, StringComparison.Ordinal);
        await AssertSampleAsync(proxy.Admin, "llmproxy_upstream_tokens_total{group=\"g\",upstream=\"m\",type=\"completion\"}", 6);
        var metrics = await proxy.Admin.GetStringAsync("/metrics");
        AssertSample(metrics, "llmproxy_upstream_tokens_total{group=\"g\",upstream=\"m\",type=\"cached\"}", 3);
        AssertSample(metrics, "llmproxy_upstream_tokens_total{group=\"g\",upstream=\"m\",type=\"reasoning\"}", 2);

        using var messages = Scripted("{\"model\":\"claude\",\"stream\":true,\"messages\":[]}", "/v1/messages", (MockHeaders.CachedTokens, "1"));
        using var anthropic = await proxy.Client.SendAsync(messages);
        Assert.Contains("event: message_stop", await anthropic.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        await AssertSampleAsync(proxy.Admin, "llmproxy_upstream_tokens_total{group=\"g\",upstream=\"m\",type=\"completion\"}", 10);
        AssertSample(await proxy.Admin.GetStringAsync("/metrics"), "llmproxy_upstream_tokens_total{group=\"g\",upstream=\"m\",type=\"cached\"}", 4);
    }
}
