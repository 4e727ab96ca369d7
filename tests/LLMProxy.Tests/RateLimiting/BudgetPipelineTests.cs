using System.Net;
using System.Text;
using System.Text.Json;
using LLMProxy.Tests.Forwarding;
using LLMProxy.Tests.Infrastructure;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Time.Testing;

namespace LLMProxy.Tests.RateLimiting;

/// <summary>Budgets end to end (SPEC §13.1): real proxy, scripted upstreams answering JSON with a <c>usage</c> block,
/// fake time for the buckets.</summary>
public class BudgetPipelineTests
{
    /// <summary>A chat request whose estimate is 1,500 + its body bytes ÷ 4 (about 1,512).</summary>
    private const string Chat = """{"model":"m","max_tokens":1500,"messages":[]}""";

    private static Func<HttpContext, Task> WithUsage(string name, int prompt, int completion, int status = 200,
        IEnumerable<(string, string)>? headers = null) => async context =>
    {
        context.Response.StatusCode = status;
        context.Response.ContentType = "application/json";
        context.Response.Headers["X-Upstream"] = name;
        foreach (var (k, v) in headers ?? [])
        {
            context.Response.Headers[k] = v;
        }
        await context.Response.WriteAsync(status == 200
            ? $$$"""{"id":"x","upstream":"{{{name}}}","usage":{"prompt_tokens":{{{prompt}}},"completion_tokens":{{{completion}}},"total_tokens":{{{prompt + completion}}}}}"""
            : """{"error":{"message":"boom"}}""");
    };

    /// <summary>The proxy's own key for an upstream: headroom is learned only from answers to it (SPEC §13.1, §13.4).</summary>
    private const string OwnKey = "auth:\n  type: bearer\n  token: sk-proxy-key-0001";

    private static Task<HttpResponseMessage> Send(HttpClient client) =>
        client.PostAsync("/v1/chat/completions", new StringContent(Chat, Encoding.UTF8, "application/json"));

    private static async Task<string> Upstream(HttpClient client)
    {
        using var r = await Send(client);
        Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        return r.Headers.GetValues("X-Upstream").Single();
    }

    [Fact]
    public async Task Tpm_KeyThatCannotCoverTheEstimate_ShedsToTheOtherKey()
    {
        await using var ups = await Upstreams.StartAsync(("a", WithUsage("a", 10, 1490)), ("b", WithUsage("b", 10, 1490)));
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(
            ups.Yaml(n => n == "a" ? "ratelimit:\n  tokensPerMinute: 2000" : ""), ups.Members()), time);

        var seen = new List<string>();
        for (var i = 0; i < 6; i++)
        {
            seen.Add(await Upstream(proxy.Client));
        }
        // a served one request (1,500 real tokens of 2,000); the 500 left cannot cover ~1,512, so b takes the rest.
        Assert.Equal(1, seen.Count(s => s == "a"));
        Assert.Equal(5, seen.Count(s => s == "b"));
    }

    [Fact]
    public async Task Tpm_EveryKeyOut_429WithRetryAfter_ThenRecoversWhenTimeAdvances()
    {
        await using var ups = await Upstreams.StartAsync(("a", WithUsage("a", 10, 1490)), ("b", WithUsage("b", 10, 1490)));
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(
            ups.Yaml(_ => "ratelimit:\n  tokensPerMinute: 2000"), ups.Members()), time);

        Assert.Equal(["a", "b"], new[] { await Upstream(proxy.Client), await Upstream(proxy.Client) }.Order());
        using var limited = await Send(proxy.Client);
        await StreamingAndErrorTests.AssertErrorBody(limited, HttpStatusCode.TooManyRequests, "upstream_rate_limited");
        // 500 left, ~1,512 needed at 2,000 per minute: about 30 s.
        var retryAfter = int.Parse(limited.Headers.GetValues("Retry-After").Single());
        Assert.InRange(retryAfter, 30, 32);
        Assert.InRange(long.Parse(limited.Headers.GetValues("retry-after-ms").Single()), (retryAfter - 1) * 1000L + 1, retryAfter * 1000L);

        Assert.Equal(2, ups["a"].Count + ups["b"].Count); // never sent upstream

        time.Advance(TimeSpan.FromSeconds(retryAfter));
        Assert.Contains(await Upstream(proxy.Client), new[] { "a", "b" });
    }

    [Fact]
    public async Task Health_GroupOutOfBudget_StaysReady_ShowsItCannotServeNow()
    {
        // Out of budget is load, not ill health: readiness stays up (with keys shared by every replica, all of them would
        // leave the Service together and clients would lose the 429 and its Retry-After); the group says it cannot serve.
        await using var ups = await Upstreams.StartAsync(("a", WithUsage("a", 10, 10)));
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(
            ups.Yaml(_ => "ratelimit:\n  requestsPerMinute: 1"), ups.Members()), time);

        Assert.Equal("a", await Upstream(proxy.Client));
        using (var limited = await Send(proxy.Client))
        {
            await StreamingAndErrorTests.AssertErrorBody(limited, HttpStatusCode.TooManyRequests, "upstream_rate_limited");
        }
        using var health = await proxy.Admin.GetAsync("/health");
        Assert.Equal(HttpStatusCode.OK, health.StatusCode);
        using var doc = JsonDocument.Parse(await health.Content.ReadAsStringAsync());
        var group = doc.RootElement.GetProperty("groups")[0];
        Assert.False(group.GetProperty("available").GetBoolean());
        Assert.True(group.GetProperty("healthy").GetBoolean());
        Assert.Equal("ok", doc.RootElement.GetProperty("status").GetString());
    }

    [Fact]
    public async Task Tpm_SettlesToRealUsage_SmallAnswersLeaveTheBudgetForMore()
    {
        await using var ups = await Upstreams.StartAsync(("a", WithUsage("a", 20, 30)));
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(
            ups.Yaml(_ => "ratelimit:\n  tokensPerMinute: 3100"), ups.Members()), time);

        // Each reserves ~1,511 but uses 50: without settling the third would find the bucket short. (3,100 rather than
        // 3,000: the client may see an answer a moment before the proxy settles it, so two reservations can overlap.)
        for (var i = 0; i < 10; i++)
        {
            Assert.Equal("a", await Upstream(proxy.Client));
        }
        await WaitForTpmUsed(proxy, 500);
        var health = JsonDocument.Parse(await proxy.Admin.GetStringAsync("/health"));
        var tpm = health.RootElement.GetProperty("groups")[0].GetProperty("upstreams")[0].GetProperty("budgets").GetProperty("tokensPerMinute");
        Assert.Equal(3100, tpm.GetProperty("limit").GetInt64());
    }

    [Fact]
    public async Task Tpm_Upstream500WithoutUsage_RefundsTheReservation()
    {
        var calls = 0;
        await using var ups = await Upstreams.StartAsync(("a", context =>
            Interlocked.Increment(ref calls) == 1 ? WithUsage("a", 0, 0, status: 500)(context) : WithUsage("a", 10, 1490)(context)));
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(
            ups.Yaml(_ => "ratelimit:\n  tokensPerMinute: 2000"), ups.Members()), time);

        using (var failed = await Send(proxy.Client))
        {
            Assert.Equal(HttpStatusCode.InternalServerError, failed.StatusCode);
        }
        await WaitForTpmUsed(proxy, 0); // the proxy refunds once the attempt ends, a moment after the client has the answer
        // Had the failed attempt kept its ~1,511, the 489 left could not cover this one.
        Assert.Equal("a", await Upstream(proxy.Client));
    }

    /// <summary>With <c>auth: none</c> a 429 answered to a client's own key is that client's account being out: the
    /// upstream is not cooled down for everyone else (a keyless request's 429 still is: it speaks for the upstream).</summary>
    [Fact]
    public async Task Answer429_ToAClientsOwnKey_NoCoolDownForOthers_KeylessOneCools()
    {
        await using var ups = await Upstreams.StartAsync(("a", async ctx =>
        {
            if (ctx.Request.Headers.Authorization == "Bearer sk-client-a" || ctx.Request.Headers.ContainsKey("X-Busy"))
            {
                ctx.Response.Headers.RetryAfter = "20";
                await ScriptedUpstream.Json("a", 429)(ctx);
                return;
            }
            await ScriptedUpstream.Json("a")(ctx);
        }));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(ups.Yaml(), ups.Members()));

        using (var ownKey = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions") { Content = new StringContent(Chat, Encoding.UTF8, "application/json") })
        {
            ownKey.Headers.Authorization = new("Bearer", "sk-client-a");
            using var r = await proxy.Client.SendAsync(ownKey);
            Assert.Equal(HttpStatusCode.TooManyRequests, r.StatusCode); // the upstream's own answer, passed on
        }
        Assert.Equal("a", await Upstream(proxy.Client)); // another client is still served

        using (var keyless = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions") { Content = new StringContent(Chat, Encoding.UTF8, "application/json") })
        {
            keyless.Headers.Add("X-Busy", "1");
            using var r = await proxy.Client.SendAsync(keyless);
            Assert.Equal(HttpStatusCode.TooManyRequests, r.StatusCode);
        }
        using (var cooled = await Send(proxy.Client))
        {
            Assert.Equal(HttpStatusCode.TooManyRequests, cooled.StatusCode); // cooling now: the proxy's own 429
            Assert.Contains("upstream_rate_limited", await cooled.Content.ReadAsStringAsync());
        }
        Assert.Equal(3, ups["a"].Count);
    }

    /// <summary>With <c>auth: none</c> every client brings its own key: what an answer says of that key's headroom is
    /// no reason to keep other clients off the upstream.</summary>
    [Fact]
    public async Task Headroom_FromAnAnswerToAClientsOwnKey_NotLearned()
    {
        var exhausted = new[] { ("x-ratelimit-remaining-requests", "0"), ("x-ratelimit-reset-requests", "6m0s") };
        await using var ups = await Upstreams.StartAsync(("a", WithUsage("a", 1, 1, headers: exhausted)));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(ups.Yaml(), ups.Members()));

        for (var i = 0; i < 3; i++)
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions") { Content = new StringContent(Chat, Encoding.UTF8, "application/json") };
            request.Headers.Authorization = new("Bearer", $"sk-client-{i}");
            using var r = await proxy.Client.SendAsync(request);
            Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        }
        Assert.Equal(3, ups["a"].Count);
    }

    [Fact]
    public async Task Headroom_ProviderSaysNoTokensLeft_KeySkippedUntilReset()
    {
        var exhausted = new[] { ("x-ratelimit-remaining-tokens", "100"), ("x-ratelimit-reset-tokens", "20s") };
        await using var ups = await Upstreams.StartAsync(("a", WithUsage("a", 10, 10, headers: exhausted)), ("b", WithUsage("b", 10, 10)));
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(ups.Yaml(_ => OwnKey), ups.Members()), time);

        var seen = new List<string>();
        for (var i = 0; i < 6; i++)
        {
            seen.Add(await Upstream(proxy.Client));
        }
        // a answered once and said 100 tokens remain for 20 s: fewer than any request's estimate.
        Assert.Equal(1, seen.Count(s => s == "a"));

        var health = JsonDocument.Parse(await proxy.Admin.GetStringAsync("/health"));
        var a = health.RootElement.GetProperty("groups")[0].GetProperty("upstreams").EnumerateArray().Single(u => u.GetProperty("name").GetString() == "a");
        Assert.Equal(100, a.GetProperty("learned").GetProperty("remainingTokens").GetInt64());

        time.Advance(TimeSpan.FromSeconds(20));
        seen.Clear();
        for (var i = 0; i < 4; i++)
        {
            seen.Add(await Upstream(proxy.Client));
        }
        Assert.Contains("a", seen); // after the reset it is used again
    }

    [Fact]
    public async Task MaxConcurrent_FullKeyShedsToTheOther()
    {
        var release = new TaskCompletionSource();
        await using var ups = await Upstreams.StartAsync(
            ("a", async context => { await release.Task; await WithUsage("a", 1, 1)(context); }),
            ("b", WithUsage("b", 1, 1)));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(
            ups.Yaml(n => n == "a" ? "ratelimit:\n  maxConcurrent: 1" : ""), ups.Members()));

        // Round robin starts somewhere: send until one request is parked on a.
        var parked = new List<Task<HttpResponseMessage>>();
        while (ups["a"].Count == 0)
        {
            var t = Send(proxy.Client);
            await Task.WhenAny(t, Task.Delay(200));
            if (!t.IsCompleted)
            {
                parked.Add(t);
            }
        }
        for (var i = 0; i < 4; i++)
        {
            Assert.Equal("b", await Upstream(proxy.Client));
        }
        release.SetResult();
        foreach (var t in parked)
        {
            (await t).Dispose();
        }
    }

    [Fact]
    public async Task Metrics_BudgetRemainingPerUpstreamAndBudget_RefreshedOnScrape()
    {
        var learned = new[] { ("x-ratelimit-remaining-requests", "42"), ("x-ratelimit-reset-requests", "10s") };
        await using var ups = await Upstreams.StartAsync(("a", WithUsage("a", 100, 400, headers: learned)), ("b", WithUsage("b", 1, 1)));
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(
            ups.Yaml(n => n == "a" ? "ratelimit:\n  requestsPerMinute: 60\n  tokensPerMinute: 2000\n  maxConcurrent: 4\n" + OwnKey : OwnKey),
            "- name: a"), time);

        Assert.Equal("a", await Upstream(proxy.Client));
        await WaitForTpmUsed(proxy, 500);
        var metrics = await proxy.Admin.GetStringAsync("/metrics");
        AssertSample(metrics, "llmproxy_upstream_budget_remaining{upstream=\"a\",budget=\"requests_per_minute\"}", 59);
        AssertSample(metrics, "llmproxy_upstream_budget_remaining{upstream=\"a\",budget=\"tokens_per_minute\"}", 1500);
        AssertSample(metrics, "llmproxy_upstream_budget_remaining{upstream=\"a\",budget=\"concurrent\"}", 4);
        AssertSample(metrics, "llmproxy_upstream_budget_remaining{upstream=\"a\",budget=\"learned_requests\"}", 42);
        Assert.DoesNotContain("budget=\"learned_tokens\"", metrics);
        Assert.DoesNotContain("upstream=\"b\",budget", metrics); // no budgets, nothing learned

        time.Advance(TimeSpan.FromSeconds(10)); // the provider's numbers expire; the buckets refill
        metrics = await proxy.Admin.GetStringAsync("/metrics");
        Assert.DoesNotContain("budget=\"learned_requests\"", metrics);
        AssertSample(metrics, "llmproxy_upstream_budget_remaining{upstream=\"a\",budget=\"requests_per_minute\"}", 60);
    }

    [Fact]
    public async Task Tpm_AnswerWithoutUsage_KeepsTheEstimateForABody_BodylessCallReservesNothing()
    {
        await using var ups = await Upstreams.StartAsync(("a", ScriptedUpstream.Json("a")));
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(
            ups.Yaml(_ => "ratelimit:\n  tokensPerMinute: 2000"), ups.Members()), time);

        Assert.Equal("a", await Upstream(proxy.Client));
        await WaitForTpmUsed(proxy, Chat.Length / 4 + 1500);
        using (var models = await proxy.Client.GetAsync("/v1/models"))
        {
            Assert.Equal(HttpStatusCode.OK, models.StatusCode);
        }
        await Task.Delay(50); // a refund or a charge would land within it
        Assert.Equal(Chat.Length / 4 + 1500, await TpmUsed(proxy));
    }

    [Fact]
    public async Task Tpm_UploadToANonLlmPath_ReservesNothing_StillCountsAgainstRpm()
    {
        // SPEC §11: only the known API shapes are LLM calls. A 100 KB file upload answered 200 without usage used to keep
        // its whole estimate (capped at the bucket), so the next chat request found the key out of tokens.
        await using var ups = await Upstreams.StartAsync(("a", ScriptedUpstream.Json("a")));
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(
            ups.Yaml(_ => "ratelimit:\n  tokensPerMinute: 20000\n  requestsPerMinute: 100"), ups.Members()), time);

        using (var form = new MultipartFormDataContent { { new ByteArrayContent(new byte[100 * 1024]), "file", "batch.jsonl" }, { new StringContent("batch"), "purpose" } })
        using (var upload = await proxy.Client.PostAsync("/v1/files", form))
        {
            Assert.Equal(HttpStatusCode.OK, upload.StatusCode);
        }
        Assert.True(ups["a"].Received.Single().Body.Length > 100 * 1024); // the upload went through whole
        await Task.Delay(50); // a charge would land within it
        Assert.Equal(0, await TpmUsed(proxy));
        Assert.Equal(1, await BudgetUsed(proxy, "requestsPerMinute"));

        Assert.Equal("a", await Upstream(proxy.Client));
        await WaitForTpmUsed(proxy, Chat.Length / 4 + 1500);
    }

    /// <summary>What counts as an LLM call for TPM: the known shapes (a trailing slash too, not the Assistants'
    /// /threads/{id}/messages), and any request with a body on a forward whose upstream url is a full LLM endpoint —
    /// there the client's path is replaced, so /anything got a real completion with no budget taken.</summary>
    [Theory]
    [InlineData("/v1/chat/completions", "", true)]
    [InlineData("/v1/chat/completions/", "", true)]
    [InlineData("/proxy/v1/messages", "", true)]
    [InlineData("/v1/threads/t1/messages", "", false)]
    [InlineData("/anything", "/v1/chat/completions", true)]
    public async Task Tpm_WhatCountsAsAnLlmCall(string path, string urlPath, bool reserves)
    {
        await using var ups = await Upstreams.StartAsync(("a", ScriptedUpstream.Json("a")));
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        var yaml = TestProxy.Config($"- name: a\n  url: \"{ups["a"].Url}{urlPath}\"\n  ratelimit:\n    tokensPerMinute: 20000", "- name: a");
        await using var proxy = await TestProxy.StartAsync(yaml, time);

        using (var r = await proxy.Client.PostAsync(path, new StringContent(Chat, Encoding.UTF8, "application/json")))
        {
            Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        }
        using (var fence = await proxy.Client.GetAsync("/v1/models")) // same connection: the POST's settle came first
        {
            Assert.Equal(HttpStatusCode.OK, fence.StatusCode);
        }

        Assert.Equal(reserves ? Chat.Length / 4 + 1500 : 0, await TpmUsed(proxy)); // no usage answered: the estimate stays
    }

    private static Task WaitForTpmUsed(TestProxy proxy, long expected) =>
        WaitUntilAsync(async () => await TpmUsed(proxy) == expected, TimeSpan.FromSeconds(5),
            async () => $"tokensPerMinute.used = {await TpmUsed(proxy)}, expected {expected}");

    private static Task<long> TpmUsed(TestProxy proxy) => BudgetUsed(proxy, "tokensPerMinute");

    private static async Task<long> BudgetUsed(TestProxy proxy, string budget)
    {
        using var health = JsonDocument.Parse(await proxy.Admin.GetStringAsync("/health"));
        return health.RootElement.GetProperty("groups")[0].GetProperty("upstreams")[0].GetProperty("budgets")
            .GetProperty(budget).GetProperty("used").GetInt64();
    }

    [Fact]
    public async Task Tpm_StreamedAnswer_SettlesToTheUsageInItsLastEvent()
    {
        await using var ups = await Upstreams.StartAsync(("a", async context =>
        {
            context.Response.ContentType = "text/event-stream";
            await context.Response.WriteAsync("data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n");
            await context.Response.Body.FlushAsync();
            await context.Response.WriteAsync("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":30,\"completion_tokens\":20}}\n\n");
            await context.Response.WriteAsync("data: [DONE]\n\n");
        }));
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(
            ups.Yaml(_ => "ratelimit:\n  tokensPerMinute: 2000"), ups.Members()), time);

        using (var r = await proxy.Client.PostAsync("/v1/chat/completions",
            new StringContent("""{"model":"m","stream":true,"max_tokens":1500}""", Encoding.UTF8, "application/json")))
        {
            Assert.Equal(HttpStatusCode.OK, r.StatusCode);
            Assert.Contains("[DONE]", await r.Content.ReadAsStringAsync());
        }
        await WaitForTpmUsed(proxy, 50);
    }

    /// <summary>Anthropic limits input and output tokens apart, and its output limit is the lowest (tier 2: 80,000 input,
    /// 16,000 output a minute). A long prompt with a short answer fits a key whose output tokens are below the whole
    /// estimate: comparing the least remaining kind with prompt + output took such a key out after every answer.</summary>
    [Fact]
    public async Task Headroom_AnthropicInputAndOutputLimits_EachAskedForItsOwnPart()
    {
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        string At(int seconds) => time.GetUtcNow().AddSeconds(seconds).ToString("yyyy-MM-ddTHH:mm:ssZ");
        (string, string)[] Anthropic() =>
        [
            ("anthropic-ratelimit-tokens-limit", "96000"), ("anthropic-ratelimit-tokens-remaining", "85000"),
            ("anthropic-ratelimit-tokens-reset", At(8)),
            ("anthropic-ratelimit-input-tokens-limit", "80000"), ("anthropic-ratelimit-input-tokens-remaining", "70000"),
            ("anthropic-ratelimit-input-tokens-reset", At(8)),
            ("anthropic-ratelimit-output-tokens-limit", "16000"), ("anthropic-ratelimit-output-tokens-remaining", "15000"),
            ("anthropic-ratelimit-output-tokens-reset", At(4)),
        ];
        await using var ups = await Upstreams.StartAsync(("a", ctx => WithUsage("a", 1, 1, headers: Anthropic())(ctx)), ("b", WithUsage("b", 1, 1)));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(ups.Yaml(_ => OwnKey), ups.Members()), time);

        async Task<string> Message(int promptBytes, int maxTokens)
        {
            var body = $$"""{"model":"m","max_tokens":{{maxTokens}},"messages":[{"role":"user","content":"{{new string('x', promptBytes)}}"}]}""";
            using var r = await proxy.Client.PostAsync("/v1/messages", new StringContent(body, Encoding.UTF8, "application/json"));
            Assert.Equal(HttpStatusCode.OK, r.StatusCode);
            return r.Headers.GetValues("X-Upstream").Single();
        }

        Assert.Equal(["a", "b"], new[] { await Message(10, 100), await Message(10, 100) }.Order());
        // ~15,000 prompt tokens + 1,024 output: more than the 15,000 output tokens left, within every limit it touches.
        var seen = new List<string>();
        for (var i = 0; i < 4; i++)
        {
            seen.Add(await Message(60_000, 1_024));
        }
        Assert.Equal(2, seen.Count(s => s == "a"));
        // A 20,000-token answer is more than the output limit has left: a is skipped, b takes them all.
        seen.Clear();
        for (var i = 0; i < 3; i++)
        {
            seen.Add(await Message(10, 20_000));
        }
        Assert.Equal(["b", "b", "b"], seen);

        var health = JsonDocument.Parse(await proxy.Admin.GetStringAsync("/health"));
        var a = health.RootElement.GetProperty("groups")[0].GetProperty("upstreams").EnumerateArray()
            .Single(u => u.GetProperty("name").GetString() == "a").GetProperty("learned");
        Assert.Equal(85000, a.GetProperty("remainingTokens").GetInt64());
        Assert.Equal(70000, a.GetProperty("remainingInputTokens").GetInt64());
        Assert.Equal(15000, a.GetProperty("remainingOutputTokens").GetInt64());
        var metrics = await proxy.Admin.GetStringAsync("/metrics");
        Assert.Contains("llmproxy_upstream_budget_remaining{upstream=\"a\",budget=\"learned_input_tokens\"} 70000", metrics);
        Assert.Contains("llmproxy_upstream_budget_remaining{upstream=\"a\",budget=\"learned_output_tokens\"} 15000", metrics);
    }

    /// <summary>An upstream that answers a request marked <c>x-test-429</c> (the test knows which of its requests the provider
    /// would refuse) with <paramref name="body"/> and <paramref name="headers"/>, and anything else with 200.</summary>
    private static Func<HttpContext, Task> RefusesMarked(string name, string body, (string, string)[] headers) =>
        async context =>
        {
            if (context.Request.Headers.ContainsKey("x-test-429"))
            {
                context.Response.StatusCode = 429;
                context.Response.ContentType = "application/json";
                foreach (var (k, v) in headers)
                {
                    context.Response.Headers[k] = v;
                }
                await context.Response.WriteAsync(body);
                return;
            }
            await WithUsage(name, 1, 1)(context);
        };

    private static async Task<HttpStatusCode> Post(HttpClient client, string path, int maxTokens, bool refused = false)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, path)
        {
            Content = new StringContent($$"""{"model":"m","max_tokens":{{maxTokens}},"messages":[]}""", Encoding.UTF8, "application/json"),
        };
        if (refused)
        {
            request.Headers.Add("x-test-429", "1");
        }
        using var r = await client.SendAsync(request);
        return r.StatusCode;
    }

    /// <summary>OpenAI answers a request above the key's whole TPM limit with 429 "Request too large … Limit 30000,
    /// Requested 50000": about the request, not the key. Parking the key for it let one client's huge <c>max_tokens</c>
    /// take every key of the group out (each retry parked the next one), and keep them out by repeating it.</summary>
    [Fact]
    public async Task Upstream429_RequestTooLargeForTheKey_ParksNoKey()
    {
        const string tooLarge = """{"error":{"message":"Request too large for gpt-4o in organization org-x on tokens per min (TPM): Limit 30000, Requested 50064. The input or output tokens must be reduced in order to run successfully.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}""";
        await using var ups = await Upstreams.StartAsync(("a", RefusesMarked("a", tooLarge, [])), ("b", RefusesMarked("b", tooLarge, [])));
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(ups.Yaml(_ => OwnKey), ups.Members(),
            groupExtra: "retry:\n  attempts: 2\n  statusCodes: [429]"), time);

        Assert.Equal(HttpStatusCode.TooManyRequests, await Post(proxy.Client, "/v1/chat/completions", 50_000, refused: true));
        Assert.Equal(2, ups["a"].Count + ups["b"].Count);
        // Nobody else is refused for it: both keys still serve.
        Assert.Equal(["a", "b"], new[] { await Upstream(proxy.Client), await Upstream(proxy.Client) }.Order());
        Assert.Contains("RequestTooLargeForKey", string.Join('\n', proxy.Logs.Entries.Select(e => e.Id.Name)));
    }

    /// <summary>Anthropic's 429 body is the same for a spent key and an oversized request; its headers tell them apart:
    /// a request whose <c>max_tokens</c> is above the announced output-token limit cannot pass on that key at any time.
    /// A 429 whose headers show a spent key still parks it (and its headroom keeps it out).</summary>
    [Fact]
    public async Task Upstream429_AboveAnAnnouncedLimit_ParksNoKey_ASpentKeyStillParks()
    {
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        const string rateLimited = """{"type":"error","error":{"type":"rate_limit_error","message":"This request would exceed the rate limit for your organization of 8,000 output tokens per minute."}}""";
        (string, string)[] Limits() =>
        [
            ("anthropic-ratelimit-output-tokens-limit", "8000"), ("anthropic-ratelimit-output-tokens-remaining", "8000"),
            ("anthropic-ratelimit-output-tokens-reset", time.GetUtcNow().AddSeconds(2).ToString("yyyy-MM-ddTHH:mm:ssZ")),
        ];
        await using var ups = await Upstreams.StartAsync(("a", ctx => RefusesMarked("a", rateLimited, Limits())(ctx)));
        // A token budget makes the proxy read the request's max_tokens (a lone member with no body rules streams the body
        // through unread, and its estimate then assumes 1,024 output tokens).
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(ups.Yaml(_ => OwnKey + "\nratelimit:\n  tokensPerMinute: 1000000000"),
            ups.Members()), time);

        Assert.Equal(HttpStatusCode.TooManyRequests, await Post(proxy.Client, "/v1/messages", 32_000, refused: true));
        Assert.Equal(HttpStatusCode.OK, await Post(proxy.Client, "/v1/messages", 1_000));
        // The same 429 for a request within the limit: the key is spent, parked.
        Assert.Equal(HttpStatusCode.TooManyRequests, await Post(proxy.Client, "/v1/messages", 7_000, refused: true));
        using var parked = await Send(proxy.Client);
        await StreamingAndErrorTests.AssertErrorBody(parked, HttpStatusCode.TooManyRequests, "upstream_rate_limited");
    }

    /// <summary>A wait of minutes is told exactly, in <c>retry-after-ms</c> as in Retry-After, and the SDKs are left to
    /// wait it out: their current versions (openai-node 6.49, @anthropic-ai/sdk 1.14) honour any such wait, so no
    /// <c>x-should-retry: false</c> takes the retry from them.</summary>
    [Fact]
    public async Task Headroom_KeyOutForMinutes_429SaysTheWholeWait_LeavesTheRetryToTheSdk()
    {
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        (string, string)[] Exhausted() =>
        [
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", time.GetUtcNow().AddSeconds(120).ToString("yyyy-MM-ddTHH:mm:ssZ")),
        ];
        await using var ups = await Upstreams.StartAsync(("a", ctx => WithUsage("a", 1, 1, headers: Exhausted())(ctx)));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(ups.Yaml(_ => OwnKey), ups.Members()), time);

        Assert.Equal("a", await Upstream(proxy.Client));
        using var limited = await Send(proxy.Client);
        await StreamingAndErrorTests.AssertErrorBody(limited, HttpStatusCode.TooManyRequests, "upstream_rate_limited");
        Assert.InRange(int.Parse(limited.Headers.GetValues("Retry-After").Single()), 119, 120);
        Assert.InRange(long.Parse(limited.Headers.GetValues("retry-after-ms").Single()), 118_001, 120_000);
        Assert.False(limited.Headers.Contains("x-should-retry"));
    }

    [Fact]
    public async Task Headroom_AnthropicNoRequestsLeft_AllKeysOut_429UntilTheEarliestReset()
    {
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        (string, string)[] Exhausted(int seconds) =>
        [
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", time.GetUtcNow().AddSeconds(seconds).ToString("yyyy-MM-ddTHH:mm:ssZ")),
        ];
        await using var ups = await Upstreams.StartAsync(
            ("a", ctx => WithUsage("a", 1, 1, headers: Exhausted(40))(ctx)), ("b", ctx => WithUsage("b", 1, 1, headers: Exhausted(20))(ctx)));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(ups.Yaml(_ => OwnKey), ups.Members()), time);

        Assert.Equal(["a", "b"], new[] { await Upstream(proxy.Client), await Upstream(proxy.Client) }.Order());
        using var limited = await Send(proxy.Client);
        await StreamingAndErrorTests.AssertErrorBody(limited, HttpStatusCode.TooManyRequests, "upstream_rate_limited");
        Assert.InRange(int.Parse(limited.Headers.GetValues("Retry-After").Single()), 19, 20); // b's reset, to the second

        time.Advance(TimeSpan.FromSeconds(20));
        Assert.Equal("b", await Upstream(proxy.Client));
    }
}
