using System.Text;
using LLMProxy.Mock;
using LLMProxy.Tests.Infrastructure;
using Microsoft.AspNetCore.Http;

namespace LLMProxy.Tests.Forwarding;

public class TokenUsageTests
{
    [Fact]
    public async Task TokenUsage_FromJsonAndSse_CountedPerUpstream()
    {
        await using var mock = await MockServer.StartAsync(new MockOptions { Port = 0, Chunks = 4, ChunkIntervalMs = 1 });
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config($"- name: m\n  url: \"{mock.BaseUrl.ToString().TrimEnd('/')}\"", "- name: m"));

        var json = await (await proxy.Client.PostAsync("/v1/chat/completions", new StringContent("{\"model\":\"x\",\"messages\":[]}"))).Content.ReadAsStringAsync();
        var sse = await (await proxy.Client.PostAsync("/v1/chat/completions", new StringContent("{\"model\":\"x\",\"stream\":true,\"messages\":[]}", Encoding.UTF8, "application/json"))).Content.ReadAsStringAsync();

        using var jsonDoc = System.Text.Json.JsonDocument.Parse(json);
        var completion = jsonDoc.RootElement.GetProperty("usage").GetProperty("completion_tokens").GetInt64();
        Assert.Contains("[DONE]", sse);
        await AssertSampleAsync(proxy.Admin, "llmproxy_upstream_tokens_total{group=\"g\",upstream=\"m\",type=\"completion\"}", completion * 2);
        var metrics = await proxy.Admin.GetStringAsync("/metrics");
        // Both answers report the same usage (same chunk count), so the counter holds twice the JSON figure.
        AssertSample(metrics, "llmproxy_upstream_tokens_total{group=\"g\",upstream=\"m\",type=\"completion\",client=\"\"}", completion * 2);
        Assert.True(Sample(metrics, "llmproxy_upstream_tokens_total{group=\"g\",upstream=\"m\",type=\"prompt\"}") > 0);
    }

    public static TheoryData<string, string, string, string, long, long, long, long> Shapes => new()
    {
        {
            "/v1/chat/completions", "application/json",
            """{"id":"c","object":"chat.completion","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":120,"completion_tokens":30,"total_tokens":150,"prompt_tokens_details":{"cached_tokens":64},"completion_tokens_details":{"reasoning_tokens":12}}}""",
            "", 120, 30, 64, 12
        },
        {
            "/v1/chat/completions", "text/event-stream",
            "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n"
            + "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":120,\"completion_tokens\":30,\"prompt_tokens_details\":{\"cached_tokens\":64},\"completion_tokens_details\":{\"reasoning_tokens\":12}}}\n\n"
            + "data: [DONE]\n\n",
            ",\"stream_options\":{\"include_usage\":true}", 120, 30, 64, 12
        },
        {
            "/v1/completions", "application/json",
            """{"object":"text_completion","choices":[{"text":"x"}],"usage":{"prompt_tokens":5,"completion_tokens":16,"total_tokens":21}}""",
            "", 5, 16, 0, 0
        },
        {
            "/v1/embeddings", "application/json",
            """{"object":"list","data":[{"embedding":[0.1]}],"usage":{"prompt_tokens":8,"total_tokens":8}}""",
            "", 8, 0, 0, 0
        },
        {
            "/v1/responses", "application/json",
            """{"object":"response","usage":{"input_tokens":300,"input_tokens_details":{"cached_tokens":256},"output_tokens":90,"output_tokens_details":{"reasoning_tokens":64},"total_tokens":390}}""",
            "", 300, 90, 256, 64
        },
        {
            "/v1/responses", "text/event-stream",
            "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"usage\":null}}\n\n"
            + "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":37,\"input_tokens_details\":{\"cached_tokens\":16},\"output_tokens\":11,\"output_tokens_details\":{\"reasoning_tokens\":4}}}}\n\n",
            "", 37, 11, 16, 4
        },
        {
            "/v1/messages", "application/json",
            """{"type":"message","content":[{"type":"text","text":"Hi"}],"usage":{"input_tokens":25,"cache_creation_input_tokens":100,"cache_read_input_tokens":2000,"output_tokens":40}}""",
            "", 2125, 40, 2000, 0
        },
        {
            // The model's tool input is real JSON and a client can steer it: its usage-like keys (and a whole "usage" object)
            // come before the answer's own usage, and do not count.
            "/v1/messages", "application/json",
            """{"type":"message","content":[{"type":"tool_use","id":"t","name":"f","input":{"prompt_tokens":900000000000,"usage":{"input_tokens":800000000000,"output_tokens":700000000000},"cache_read_input_tokens":5}}],"stop_reason":"tool_use","usage":{"input_tokens":25,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":12}}""",
            "", 25, 12, 0, 0
        },
        {
            "/v1/messages", "text/event-stream",
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":10,\"output_tokens\":1}}}\n\n"
            + "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n"
            + "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":15}}\n\n"
            + "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
            "", 35, 15, 10, 0
        },
    };

    /// <summary>Each API shape, JSON and SSE, written upstream in 5-byte pieces flushed one by one so every usage key
    /// and number is split across writes: every type is counted once and the client gets the bytes unchanged.</summary>
    [Theory]
    [MemberData(nameof(Shapes))]
    public async Task TokenUsage_EachShapeSplitAcrossWrites_CountedPerType(string path, string contentType, string body, string streamExtra,
        long prompt, long completion, long cached, long reasoning)
    {
        var bytes = Encoding.UTF8.GetBytes(body);
        await using var upstream = await ScriptedUpstream.StartAsync(async context =>
        {
            context.Response.ContentType = contentType;
            for (var i = 0; i < bytes.Length; i += 5)
            {
                await context.Response.Body.WriteAsync(bytes.AsMemory(i, Math.Min(5, bytes.Length - i)));
                await context.Response.Body.FlushAsync();
            }
        });
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config($"- name: u\n  url: \"{upstream.Url}\"", "- name: u"));

        var stream = contentType == "text/event-stream" ? ",\"stream\":true" : "";
        // A client that asked for usage itself gets the stream exactly as the upstream sent it.
        using var response = await proxy.Client.PostAsync(path, new StringContent($"{{\"model\":\"m\"{stream}{streamExtra}}}", Encoding.UTF8, "application/json"));
        Assert.Equal(body, await response.Content.ReadAsStringAsync());

        await AssertSampleAsync(proxy.Admin, "llmproxy_upstream_tokens_total{group=\"g\",upstream=\"u\",type=\"prompt\"}", prompt);
        var metrics = await proxy.Admin.GetStringAsync("/metrics");
        AssertSample(metrics, "llmproxy_upstream_tokens_total{group=\"g\",upstream=\"u\",type=\"completion\"}", completion);
        AssertSample(metrics, "llmproxy_upstream_tokens_total{group=\"g\",upstream=\"u\",type=\"cached\"}", cached);
        AssertSample(metrics, "llmproxy_upstream_tokens_total{group=\"g\",upstream=\"u\",type=\"reasoning\"}", reasoning);
    }

    /// <summary>Answers that name token counts but generated nothing: Anthropic's count_tokens (Claude Code asks it before
    /// nearly every turn), OpenAI's input-token count, and a stored response fetched again. None is an LLM call (SPEC
    /// §11/§13.1 reserve nothing for them), so none is counted as tokens either — the proxy's counters would show
    /// every counted prompt twice, and a fetched response's usage once more per fetch.</summary>
    [Theory]
    [InlineData("POST", "/v1/messages/count_tokens", """{"input_tokens":2095}""")]
    [InlineData("POST", "/v1/responses/input_tokens", """{"object":"response.input_tokens","input_tokens":123}""")]
    [InlineData("GET", "/v1/responses/resp_1", """{"object":"response","usage":{"input_tokens":300,"output_tokens":90,"total_tokens":390}}""")]
    public async Task TokenUsage_AnswersThatAreNoGeneration_CountNothing(string method, string path, string answer)
    {
        await using var upstream = await ScriptedUpstream.StartAsync(async context =>
        {
            context.Response.ContentType = "application/json";
            await context.Response.WriteAsync(context.Request.Path == path ? answer
                : """{"id":"x","usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}""");
        });
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config($"- name: u\n  url: \"{upstream.Url}\"", "- name: u"));

        using (var request = new HttpRequestMessage(new HttpMethod(method), path))
        {
            if (method == "POST")
            {
                request.Content = new StringContent("""{"model":"m","messages":[{"role":"user","content":"hi"}]}""", Encoding.UTF8, "application/json");
            }
            using var response = await proxy.Client.SendAsync(request);
            Assert.Equal(answer, await response.Content.ReadAsStringAsync());
        }
        using (var chat = await proxy.Client.PostAsync("/v1/chat/completions", new StringContent("{\"model\":\"m\"}", Encoding.UTF8, "application/json")))
        {
            chat.EnsureSuccessStatusCode();
        }
        // Both requests are accounted for (after their tokens, in the same handler): only the chat's usage counted.
        await WaitUntilAsync(async () => Sum(await proxy.Admin.GetStringAsync("/metrics"), "llmproxy_http_requests_total") == 2, TimeSpan.FromSeconds(5));
        var metrics = await proxy.Admin.GetStringAsync("/metrics");
        AssertSample(metrics, "llmproxy_upstream_tokens_total{group=\"g\",upstream=\"u\",type=\"prompt\"}", 5);
        AssertSample(metrics, "llmproxy_upstream_tokens_total{group=\"g\",upstream=\"u\",type=\"completion\"}", 7);
    }

    /// <summary>A client that accepts gzip (every SDK does) must not get its answers' usage hidden in a compressed body:
    /// upstreams are asked for plain answers, whatever the client accepts.</summary>
    [Fact]
    public async Task TokenUsage_ClientAcceptsGzip_UpstreamAskedForPlain_UsageCounted()
    {
        const string body = """{"id":"x","usage":{"prompt_tokens":31,"completion_tokens":7,"total_tokens":38}}""";
        await using var upstream = await ScriptedUpstream.StartAsync(async context =>
        {
            // Compresses whenever the request allows it, as providers behind a CDN do.
            context.Response.ContentType = "application/json";
            if (context.Request.Headers.AcceptEncoding.ToString().Contains("gzip", StringComparison.OrdinalIgnoreCase))
            {
                context.Response.Headers.ContentEncoding = "gzip";
                await using var gzip = new System.IO.Compression.GZipStream(context.Response.Body, System.IO.Compression.CompressionLevel.Fastest, leaveOpen: true);
                await gzip.WriteAsync(Encoding.UTF8.GetBytes(body));
                return;
            }
            await context.Response.WriteAsync(body);
        });
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config($"- name: u\n  url: \"{upstream.Url}\"", "- name: u"));

        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions") { Content = new StringContent("{\"model\":\"m\"}", Encoding.UTF8, "application/json") };
        request.Headers.TryAddWithoutValidation("Accept-Encoding", "gzip, deflate, br");
        using var response = await proxy.Client.SendAsync(request);

        Assert.Equal(body, await response.Content.ReadAsStringAsync());
        Assert.Equal("identity", Assert.Single(upstream.Received).Header("Accept-Encoding"));
        await AssertSampleAsync(proxy.Admin, "llmproxy_upstream_tokens_total{group=\"g\",upstream=\"u\",type=\"prompt\"}", 31);
        AssertSample(await proxy.Admin.GetStringAsync("/metrics"), "llmproxy_upstream_tokens_total{group=\"g\",upstream=\"u\",type=\"completion\"}", 7);
    }

    /// <summary>An Anthropic stream reports its input tokens in <c>message_start</c>; when it then breaks, the tokens
    /// were still spent (and the budgets settle with them): the token metrics count them as well, rather than only the
    /// answers that ended cleanly.</summary>
    [Fact]
    public async Task TokenUsage_StreamBrokenAfterItsUsage_StillCounted()
    {
        const string Start = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"content\":[],\"usage\":{\"input_tokens\":25,\"cache_read_input_tokens\":10,\"output_tokens\":1}}}\n\n";
        var headRead = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.SseThen(Start, headRead.Task));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config($"- name: u\n  url: \"{upstream.Url}\"", "- name: u"));

        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/messages")
        {
            Content = new StringContent("{\"model\":\"m\",\"stream\":true}", Encoding.UTF8, "application/json"),
        };
        using var response = await proxy.Client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        headRead.TrySetResult();
        await StreamAssert.EndsAbruptlyAsync(await response.Content.ReadAsStreamAsync());

        await AssertSampleAsync(proxy.Admin, "llmproxy_upstream_errors_total{group=\"g\",upstream=\"u\",error=\"stream\"}", 1);
        var metrics = await proxy.Admin.GetStringAsync("/metrics");
        AssertSample(metrics, "llmproxy_upstream_tokens_total{group=\"g\",upstream=\"u\",type=\"prompt\"}", 35);
        AssertSample(metrics, "llmproxy_upstream_tokens_total{group=\"g\",upstream=\"u\",type=\"completion\"}", 1);
    }

    /// <summary>Hostile answers — absurd numbers, a deeply nested megabyte, no usage at all — pass through whole and
    /// count nothing they should not.</summary>
    [Theory]
    [InlineData("""{"usage":{"prompt_tokens":99999999999999999999999999,"completion_tokens":-3,"cached_tokens":1e400}}""")]
    [InlineData("no usage here, not even JSON")]
    [InlineData(null)]
    public async Task TokenUsage_HostileUpstream_PassesThroughAndCountsNothing(string? body)
    {
        body ??= new string('[', 1 << 20) + "{\"prompt_tokens\":" + new string('9', 5000);
        await using var upstream = await ScriptedUpstream.StartAsync(async context =>
        {
            context.Response.ContentType = "application/json";
            await context.Response.WriteAsync(body);
        });
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config($"- name: u\n  url: \"{upstream.Url}\"", "- name: u"));

        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        using var response = await proxy.Client.PostAsync("/v1/chat/completions", new StringContent("{\"model\":\"m\"}"), cts.Token);
        Assert.Equal(body, await response.Content.ReadAsStringAsync(cts.Token));
        var metrics = await proxy.Admin.GetStringAsync("/metrics");
        Assert.Equal(0, Sum(metrics, "llmproxy_upstream_tokens_total"));
    }
}
