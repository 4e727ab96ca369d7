using System.Net;
using System.Security.Cryptography;
using System.Text;
using LLMProxy.Tests.Infrastructure;
using LLMProxy.Tests.Reliability;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Time.Testing;

namespace LLMProxy.Tests.Forwarding;

/// <summary>Client keys end to end (SPEC §15): the real proxy in front of scripted upstreams that record what they
/// received; fake time for the keys' buckets and token budgets.</summary>
public class ClientKeyPipelineTests
{
    private const string KeyA = "team-a-key-0123456789";
    private const string KeyB = "team-b-key-9876543210";
    /// <summary>A chat request whose estimate is 1,500 + its body bytes ÷ 4 (about 1,512).</summary>
    private const string Chat = """{"model":"gpt-4o-mini","max_tokens":1500,"messages":[]}""";

    private static string ShaB => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(KeyB)));

    /// <summary>Two keys: team_a by value (with <paramref name="extraA"/>), team_b by its SHA-256.</summary>
    private static string Keys(string extraA = "") =>
        $"keys:\n  - name: team_a\n    key: \"{KeyA}\"\n{string.Join('\n', extraA.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => "    " + l))}\n  - name: team_b\n    sha256: \"{ShaB}\"";

    private static Func<HttpContext, Task> WithUsage(int prompt, int completion, int status = 200) => async context =>
    {
        context.Response.StatusCode = status;
        context.Response.ContentType = "application/json";
        await context.Response.WriteAsync(status == 200
            ? $$$"""{"id":"x","usage":{"prompt_tokens":{{{prompt}}},"completion_tokens":{{{completion}}},"total_tokens":{{{prompt + completion}}}}}"""
            : """{"error":{"message":"boom"}}""");
    };

    private static async Task<TestProxy> StartAsync(ScriptedUpstream upstream, string keys, TimeProvider? time = null, string upstreamExtra = "") =>
        await TestProxy.StartAsync(TestProxy.Config($"- name: u\n  url: \"{upstream.Url}\"\n{upstreamExtra}", "- name: u", forwardExtra: keys), time);

    private static HttpRequestMessage Post(string? header = "Authorization", string? value = "Bearer " + KeyA, string body = Chat)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions") { Content = new StringContent(body, Encoding.UTF8, "application/json") };
        if (header is not null)
        {
            Assert.True(request.Headers.TryAddWithoutValidation(header, value));
        }
        return request;
    }

    private static async Task<HttpStatusCode> SendAsync(TestProxy proxy, HttpRequestMessage request)
    {
        using (request)
        using (var response = await proxy.Client.SendAsync(request))
        {
            if (response.StatusCode != HttpStatusCode.OK)
            {
                await StreamingAndErrorTests.AssertErrorBody(response, response.StatusCode, (int)response.StatusCode switch
                {
                    401 => "invalid_api_key",
                    403 => "model_not_allowed",
                    _ => "rate_limited",
                });
            }
            return response.StatusCode;
        }
    }

    [Theory]
    [InlineData("Authorization", "Bearer {A}", HttpStatusCode.OK)]
    [InlineData("Authorization", "bearer {A}", HttpStatusCode.OK)]          // the scheme is case-insensitive (RFC 9110 §11.1)
    [InlineData("Authorization", "BEARER    {A}", HttpStatusCode.OK)]
    [InlineData("x-api-key", "{A}", HttpStatusCode.OK)]
    [InlineData("X-API-KEY", "{B}", HttpStatusCode.OK)]                     // a key configured by its sha256
    [InlineData("Authorization", "Bearer {B}", HttpStatusCode.OK)]
    [InlineData(null, null, HttpStatusCode.Unauthorized)]                 // no key
    [InlineData("Authorization", "Bearer", HttpStatusCode.Unauthorized)]
    [InlineData("Authorization", "Bearer    ", HttpStatusCode.Unauthorized)]
    [InlineData("Authorization", "{A}", HttpStatusCode.Unauthorized)]       // no scheme
    [InlineData("Authorization", "Basic {A}", HttpStatusCode.Unauthorized)]
    [InlineData("Authorization", "Bearer{A}", HttpStatusCode.Unauthorized)]
    [InlineData("Authorization", "Bearer\t{A}", HttpStatusCode.Unauthorized)]      // only SP separates scheme and token (RFC 9110 §11.4)
    [InlineData("Authorization", "Bearer {A}, Bearer {A}", HttpStatusCode.Unauthorized)] // two credentials folded into one line
    [InlineData("Authorization", "Bearer {A} ", HttpStatusCode.OK)]           // trailing whitespace is not part of the key
    [InlineData("x-api-key", "Bearer {A}", HttpStatusCode.Unauthorized)]      // x-api-key carries the bare key
    [InlineData("Authorization", "Bearer {A}x", HttpStatusCode.Unauthorized)]
    [InlineData("Authorization", "Bearer team-a-key-012345678", HttpStatusCode.Unauthorized)] // a prefix of the key
    [InlineData("Authorization", "Bearer TEAM-A-KEY-0123456789", HttpStatusCode.Unauthorized)] // keys are case-sensitive
    [InlineData("x-api-key", "", HttpStatusCode.Unauthorized)]
    [InlineData("api-key", "{A}", HttpStatusCode.Unauthorized)]             // not a header the proxy reads
    public async Task Key_PresentedAs_AcceptedOrRefused401(string? header, string? value, HttpStatusCode expected)
    {
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u"));
        await using var proxy = await StartAsync(upstream, Keys());

        using var request = Post(header, value?.Replace("{A}", KeyA, StringComparison.Ordinal).Replace("{B}", KeyB, StringComparison.Ordinal));
        using var response = await proxy.Client.SendAsync(request);

        Assert.Equal(expected, response.StatusCode);
        if (expected == HttpStatusCode.Unauthorized)
        {
            await StreamingAndErrorTests.AssertErrorBody(response, HttpStatusCode.Unauthorized, "invalid_api_key");
            Assert.Equal("Bearer", response.Headers.WwwAuthenticate.Single().Scheme);
            Assert.Equal(0, upstream.Count); // nothing of an unauthenticated request reaches an upstream
        }
        else
        {
            Assert.Equal(1, upstream.Count);
        }
    }

    [Fact]
    public async Task Key_BothHeaders_SameKeyAccepted_DifferentKeysRefused()
    {
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u"));
        await using var proxy = await StartAsync(upstream, Keys());

        var same = Post(value: "Bearer " + KeyA);
        same.Headers.Add("x-api-key", KeyA);
        Assert.Equal(HttpStatusCode.OK, await SendAsync(proxy, same));
        // Both valid keys, but which one is the proxy's would be a guess, and the other would go upstream.
        var different = Post(value: "Bearer " + KeyA);
        different.Headers.Add("x-api-key", KeyB);
        Assert.Equal(HttpStatusCode.Unauthorized, await SendAsync(proxy, different));
        Assert.Equal(1, upstream.Count);
        var received = Assert.Single(upstream.Received);
        Assert.Null(received.Header("Authorization"));
        Assert.Null(received.Header("x-api-key"));
    }

    [Fact]
    public async Task Key_HostileWireForms_Refused401_WithOneJsonBody()
    {
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u"));
        await using var proxy = await StartAsync(upstream, Keys());
        var port = RawClient.PortOf(proxy.ForwardUrl());

        string[] heads =
        [
            $"GET /v1/models?api_key={KeyA}&key={KeyA} HTTP/1.1\r\nHost: x\r\n\r\n",                                  // query string: never read
            $"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KeyA}\r\nAuthorization: Bearer {KeyA}\r\n\r\n", // header twice
            $"GET /v1/models HTTP/1.1\r\nHost: x\r\nx-api-key: {KeyA}\r\nx-api-key: {KeyA}\r\n\r\n",
            $"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {new string('k', 16_000)}\r\n\r\n",        // huge
            $"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KeyA}\t\r\n\r\n",                           // trailing whitespace is trimmed by HTTP; still the key
        ];
        var expected = new[] { 401, 401, 401, 401, 200 };
        for (var i = 0; i < heads.Length; i++)
        {
            await using var raw = await RawClient.ConnectAsync(port);
            await raw.SendAsync(heads[i]);
            var response = await raw.ReadResponseAsync(TimeSpan.FromSeconds(10));
            Assert.True(expected[i] == response.Status, $"case {i}: {response.Status}");
            if (response.Status == 401)
            {
                Assert.Contains("\"code\":\"invalid_api_key\"", response.BodyText);
            }
        }
        // Non-ASCII bytes in the key (Latin-1 or broken UTF-8): refused, by Kestrel (400) or as a key (401), never a crash.
        await using (var raw = await RawClient.ConnectAsync(port))
        {
            var head = Encoding.ASCII.GetBytes($"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KeyA}")
                .Concat(new byte[] { 0xC3, 0x28, 0xFF }).Concat(Encoding.ASCII.GetBytes("\r\n\r\n")).ToArray();
            await raw.SendAsync(head);
            var response = await raw.ReadResponseAsync(TimeSpan.FromSeconds(10));
            Assert.Contains(response.Status, new[] { 400, 401 });
        }
        Assert.Equal(1, upstream.Count);
    }

    public static TheoryData<string, string> HeaderForms => new()
    {
        { "Authorization", "none" }, { "Authorization", "bearer" }, { "Authorization", "insert-x-api-key" },
        { "x-api-key", "none" }, { "x-api-key", "bearer" }, { "x-api-key", "insert-x-api-key" },
    };

    /// <summary>Upstreams without credentials, with <c>auth</c>, and with a header rule that inserts the provider's
    /// <c>x-api-key</c> only when absent (Anthropic's set-up): the client's key is removed before either applies.</summary>
    [Theory]
    [MemberData(nameof(HeaderForms))]
    public async Task Key_NeverSentUpstream_UpstreamAuthAndOtherClientHeadersStillGo(string header, string upstreamKind)
    {
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u"));
        await using var proxy = await StartAsync(upstream, Keys(), upstreamExtra: upstreamKind switch
        {
            "bearer" => "  auth: { type: bearer, token: \"provider-token-1\" }",
            "insert-x-api-key" => "  headers:\n    - { op: insert, key: x-api-key, value: \"provider-key-2\" }",
            _ => "",
        });

        var request = Post(header, header == "Authorization" ? "Bearer " + KeyA : KeyA);
        request.Headers.Add("X-Client-Header", "kept");
        if (header == "x-api-key")
        {
            // The other header is the client's own business: it goes on as before (and is replaced by the upstream's auth).
            request.Headers.TryAddWithoutValidation("OpenAI-Organization", "org-1");
        }
        Assert.Equal(HttpStatusCode.OK, await SendAsync(proxy, request));

        var received = Assert.Single(upstream.Received);
        Assert.Equal("kept", received.Header("X-Client-Header"));
        Assert.DoesNotContain(received.Headers, h => h.Value.Any(v => v.Contains(KeyA, StringComparison.Ordinal)));
        Assert.Equal(upstreamKind == "insert-x-api-key" ? "provider-key-2" : null, received.Header("x-api-key"));
        Assert.Equal(upstreamKind == "bearer" ? "Bearer provider-token-1" : null, received.Header("Authorization"));
        if (header == "x-api-key")
        {
            Assert.Equal("org-1", received.Header("OpenAI-Organization"));
        }
    }

    /// <summary>The key is removed from each attempt's request, not only the first: a retried attempt on another member
    /// (after a 500) carries neither header either.</summary>
    [Fact]
    public async Task Key_NeverSentUpstream_OnARetriedAttemptEither()
    {
        var calls = 0;
        Func<HttpContext, Task> firstFails = context =>
            ScriptedUpstream.Json("u", Interlocked.Increment(ref calls) == 1 ? 500 : 200)(context);
        await using var ups = await Upstreams.StartAsync(("a", firstFails), ("b", firstFails));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(ups.Yaml(), ups.Members(), forwardExtra: Keys()));

        var request = Post(value: "Bearer " + KeyA);
        request.Headers.Add("x-api-key", KeyA);
        Assert.Equal(HttpStatusCode.OK, await SendAsync(proxy, request));

        var received = ups["a"].Received.Concat(ups["b"].Received).ToList();
        Assert.Equal(2, received.Count);
        Assert.All(received, r => Assert.DoesNotContain(r.Headers, h => h.Value.Any(v => v.Contains(KeyA, StringComparison.Ordinal))));
    }

    [Fact]
    public async Task Ratelimit_OverBurst_429RateLimitedWithRetryAfter_PerKey_UnauthenticatedSpendNothing_RefillsWithTime()
    {
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u"));
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var proxy = await StartAsync(upstream, Keys("ratelimit: { perSecond: 1, burst: 2 }"), time);

        for (var i = 0; i < 5; i++)
        {
            Assert.Equal(HttpStatusCode.Unauthorized, await SendAsync(proxy, Post(value: "Bearer wrong-key-" + i)));
        }
        Assert.Equal(HttpStatusCode.OK, await SendAsync(proxy, Post()));
        Assert.Equal(HttpStatusCode.OK, await SendAsync(proxy, Post("x-api-key", KeyA)));
        using (var limited = await proxy.Client.SendAsync(Post()))
        {
            await StreamingAndErrorTests.AssertErrorBody(limited, HttpStatusCode.TooManyRequests, "rate_limited");
            Assert.Equal("1", limited.Headers.GetValues("Retry-After").Single());
        }
        Assert.Equal(HttpStatusCode.OK, await SendAsync(proxy, Post(value: "Bearer " + KeyB))); // team_b has no limit
        Assert.Equal(3, upstream.Count);

        time.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(HttpStatusCode.OK, await SendAsync(proxy, Post()));
        await AssertSampleAsync(proxy.Admin, "llmproxy_rate_limit_rejections_total{forward=\"fwd\",limit_type=\"client_key\"}", 1);
    }

    [Fact]
    public async Task Tpm_OverBudget_429WithRetryAfter_NeverSentUpstream_ThenRecovers()
    {
        await using var upstream = await ScriptedUpstream.StartAsync(WithUsage(10, 1490));
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var proxy = await StartAsync(upstream, Keys("tokensPerMinute: 2000"), time);

        Assert.Equal(HttpStatusCode.OK, await SendAsync(proxy, Post()));
        // Settled to 1,500: the 500 left cannot cover ~1,512. The proxy settles a moment after the client has the answer.
        HttpResponseMessage? limited = null;
        await Eventually.WaitUntilAsync(async () =>
        {
            limited?.Dispose();
            limited = await proxy.Client.SendAsync(Post());
            return limited.StatusCode == HttpStatusCode.TooManyRequests;
        }, TimeSpan.FromSeconds(5));
        using (limited)
        {
            await StreamingAndErrorTests.AssertErrorBody(limited!, HttpStatusCode.TooManyRequests, "rate_limited");
            Assert.InRange(int.Parse(limited!.Headers.GetValues("Retry-After").Single()), 30, 32);
        }
        Assert.Equal(1, upstream.Count);
        Assert.Equal(HttpStatusCode.OK, await SendAsync(proxy, Post(value: "Bearer " + KeyB))); // another key's budget

        time.Advance(TimeSpan.FromSeconds(32));
        Assert.Equal(HttpStatusCode.OK, await SendAsync(proxy, Post()));
    }

    [Fact]
    public async Task Tpm_UploadToANonLlmPath_ReservesNothingOnTheKey()
    {
        // SPEC §11: a file upload is no LLM call. Its 100 KB used to reserve the key's whole budget and keep it (a 200
        // without usage), so the key's next chat request got 429.
        await using var upstream = await ScriptedUpstream.StartAsync(context =>
            context.Request.Path == "/v1/files" ? ScriptedUpstream.Json("u")(context) : WithUsage(10, 10)(context));
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var proxy = await StartAsync(upstream, Keys("tokensPerMinute: 20000"), time);

        using (var upload = new HttpRequestMessage(HttpMethod.Post, "/v1/files")
        {
            Content = new MultipartFormDataContent { { new ByteArrayContent(new byte[100 * 1024]), "file", "batch.jsonl" }, { new StringContent("batch"), "purpose" } },
        })
        {
            upload.Headers.Authorization = new("Bearer", KeyA);
            Assert.Equal(HttpStatusCode.OK, await SendAsync(proxy, upload));
        }
        Assert.Equal(HttpStatusCode.OK, await SendAsync(proxy, Post()));
        Assert.Equal(2, upstream.Count);
    }

    [Fact]
    public async Task Tpm_SettlesToRealUsage_AndRefundsAFailureWithoutUsage()
    {
        var calls = 0;
        await using var upstream = await ScriptedUpstream.StartAsync(context =>
            Interlocked.Increment(ref calls) == 1 ? WithUsage(0, 0, status: 500)(context) : WithUsage(20, 30)(context));
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        // Room for two estimates (~1,512 each) at once, never three.
        await using var proxy = await StartAsync(upstream, Keys("tokensPerMinute: 3100"), time);

        Assert.Equal(HttpStatusCode.InternalServerError, (await proxy.Client.SendAsync(Post())).StatusCode);
        // Had the 500 kept its estimate, or the answers theirs (instead of the 50 they report), the budget would run
        // out by the third request; the settlement happens a moment after each answer, so wait for it when refused.
        for (var i = 0; i < 10; i++)
        {
            await Eventually.WaitUntilAsync(async () => await SendAsync(proxy, Post()) == HttpStatusCode.OK, TimeSpan.FromSeconds(5));
        }
        Assert.Equal(11, upstream.Count);
    }

    /// <summary>Streams settle too: the built-in mock streams without usage unless asked, the proxy asks for it (SPEC
    /// §13.2), and the key's reservation settles to what the stream reported.</summary>
    [Fact]
    public async Task Tpm_StreamedAnswers_SettleToTheStreamsUsage_CountedUnderTheKey()
    {
        await using var mock = await LLMProxy.Tests.Mock.MockTestSupport.StartAsync(new LLMProxy.Mock.MockOptions { Chunks = 4, ChunkIntervalMs = 0 });
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        // Each stream reserves ~1,040 (no max_tokens): three at once would not fit, ten settled to their usage do.
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config($"- name: m\n  url: \"{mock.BaseUrl.ToString().TrimEnd('/')}\"", "- name: m",
            forwardExtra: Keys("tokensPerMinute: 2500")), time);

        for (var i = 0; i < 10; i++)
        {
            await Eventually.WaitUntilAsync(async () =>
            {
                using var stream = LLMProxy.Tests.Mock.MockTestSupport.StreamChat();
                stream.Headers.Add("x-api-key", KeyA);
                using var response = await proxy.Client.SendAsync(stream);
                if (response.StatusCode != HttpStatusCode.OK)
                {
                    return false; // the previous stream's settlement lands a moment after its end
                }
                Assert.EndsWith("data: [DONE]\n\n", await response.Content.ReadAsStringAsync(), StringComparison.Ordinal);
                return true;
            }, TimeSpan.FromSeconds(5));
        }
        await AssertSampleAsync(proxy.Admin, "llmproxy_upstream_tokens_total{group=\"g\",upstream=\"m\",type=\"completion\",client=\"team_a\"}", 40);
        AssertSample(await proxy.Admin.GetStringAsync("/metrics"), "llmproxy_http_requests_total{forward=\"fwd\",method=\"POST\",status=\"200\",client=\"team_a\"}", 10);
    }

    [Fact]
    public async Task Tpm_ConcurrentRequests_NeverAdmitMoreThanTheBudgetCovers()
    {
        // Every answer reports exactly what was estimated, so no settlement frees anything: the budget covers 4 requests.
        using var gate = new SemaphoreSlim(0);
        await using var upstream = await ScriptedUpstream.StartAsync(async context =>
        {
            await gate.WaitAsync(context.RequestAborted);
            await WithUsage(1512, 0)(context);
        });
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var proxy = await StartAsync(upstream, Keys("tokensPerMinute: 6100"), time);

        var all = Enumerable.Range(0, 16).Select(_ => SendAsync(proxy, Post())).ToArray();
        await Eventually.WaitUntilAsync(() => upstream.Count == 4 && all.Count(t => t.IsCompleted) == 12, TimeSpan.FromSeconds(10));
        gate.Release(16);
        var statuses = await Task.WhenAll(all);

        Assert.Equal(4, statuses.Count(s => s == HttpStatusCode.OK));
        Assert.Equal(12, statuses.Count(s => s == HttpStatusCode.TooManyRequests));
        Assert.Equal(4, upstream.Count);
    }

    [Fact]
    public async Task Models_KeyNamedModelInAnotherCase_400BadRequest_NeverSentUpstream()
    {
        // Go's encoding/json (Ollama, one-api, ...) matches names ignoring case, last one wins: forwarded, this body would
        // run gpt-4o for a key limited to gpt-4o-mini.
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u"));
        await using var proxy = await StartAsync(upstream, Keys("models: [\"gpt-4o-mini\"]"));

        foreach (var body in new[]
        {
            """{"model":"gpt-4o-mini","MODEL":"gpt-4o","messages":[]}""",
            """{"Model":"gpt-4o","model":"gpt-4o-mini","messages":[]}""",
            """{"model":"gpt-4o-mini","mod\u0045l":"gpt-4o","messages":[]}""",
        })
        {
            using var request = Post(body: body);
            using var response = await proxy.Client.SendAsync(request);
            await StreamingAndErrorTests.AssertErrorBody(response, HttpStatusCode.BadRequest, "bad_request");
        }
        Assert.Equal(0, upstream.Count);
        // The exact name alone, and the name inside a message, are fine.
        Assert.Equal(HttpStatusCode.OK, await SendAsync(proxy, Post(body: """{"model":"gpt-4o-mini","messages":[{"MODEL":"gpt-4o"}],"models":1}""")));
        Assert.Equal(1, upstream.Count);
    }

    [Fact]
    public async Task Models_NotAllowed403_GlobCaseInsensitive_UnreadableBodyRefused_BodylessPasses()
    {
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u"));
        await using var proxy = await StartAsync(upstream, Keys("models: [\"gpt-4o-mini\", \"claude-*\"]"));

        Assert.Equal(HttpStatusCode.OK, await SendAsync(proxy, Post()));
        Assert.Equal(HttpStatusCode.OK, await SendAsync(proxy, Post(body: """{"model":"CLAUDE-3-5-sonnet","messages":[]}""")));
        Assert.Equal(HttpStatusCode.Forbidden, await SendAsync(proxy, Post(body: """{"model":"gpt-4o","messages":[]}""")));
        Assert.Equal(HttpStatusCode.Forbidden, await SendAsync(proxy, Post(body: """{"messages":[]}""")));
        Assert.Equal(HttpStatusCode.Forbidden, await SendAsync(proxy, Post(body: "model=gpt-4o-mini")));
        Assert.Equal(HttpStatusCode.OK, await SendAsync(proxy, Post(value: "Bearer " + KeyB, body: """{"model":"gpt-4o","messages":[]}"""))); // team_b: any model
        using (var models = new HttpRequestMessage(HttpMethod.Get, "/v1/models"))
        {
            models.Headers.Add("x-api-key", KeyA);
            Assert.Equal(HttpStatusCode.OK, await SendAsync(proxy, models));
        }
        // A chunked body is read up to the replay limit like any other: its model counts.
        using (var chunked = Post())
        {
            chunked.Headers.TransferEncodingChunked = true;
            Assert.Equal(HttpStatusCode.OK, await SendAsync(proxy, chunked));
        }
        using (var chunked = Post(body: """{"model":"gpt-4o","messages":[]}"""))
        {
            chunked.Headers.TransferEncodingChunked = true;
            Assert.Equal(HttpStatusCode.Forbidden, await SendAsync(proxy, chunked));
        }
        // Longer than that, it streams and its model cannot be read: refused rather than let around the list.
        using (var huge = Post(body: """{"model":"gpt-4o-mini","messages":[],"pad":" """ + new string('x', 5 * 1024 * 1024) + "\"}"))
        {
            huge.Headers.TransferEncodingChunked = true;
            Assert.Equal(HttpStatusCode.Forbidden, await SendAsync(proxy, huge));
        }
        Assert.Equal(5, upstream.Count);
    }

    [Fact]
    public async Task Metrics_AndAccessLine_CarryTheKeysName_NeverTheKey()
    {
        await using var upstream = await ScriptedUpstream.StartAsync(WithUsage(7, 5));
        await using var proxy = await StartAsync(upstream, Keys());

        Assert.Equal(HttpStatusCode.OK, await SendAsync(proxy, Post()));
        Assert.Equal(HttpStatusCode.OK, await SendAsync(proxy, Post("x-api-key", KeyB)));
        Assert.Equal(HttpStatusCode.Unauthorized, await SendAsync(proxy, Post(value: "Bearer nope-nope-nope-nope")));

        await AssertSampleAsync(proxy.Admin, "llmproxy_http_requests_total{forward=\"fwd\",method=\"POST\",status=\"401\",client=\"\"}", 1);
        var metrics = await proxy.Admin.GetStringAsync("/metrics");
        AssertSample(metrics, "llmproxy_http_requests_total{forward=\"fwd\",method=\"POST\",status=\"200\",client=\"team_a\"}", 1);
        AssertSample(metrics, "llmproxy_http_requests_total{forward=\"fwd\",method=\"POST\",status=\"200\",client=\"team_b\"}", 1);
        AssertSample(metrics, "llmproxy_http_request_duration_seconds_count{forward=\"fwd\",method=\"POST\",status=\"200\",client=\"team_a\"}", 1);
        AssertSample(metrics, "llmproxy_upstream_tokens_total{group=\"g\",upstream=\"u\",type=\"prompt\",client=\"team_a\"}", 7);
        AssertSample(metrics, "llmproxy_upstream_tokens_total{group=\"g\",upstream=\"u\",type=\"completion\",client=\"team_b\"}", 5);
        Assert.Equal(0, Sample(metrics, "llmproxy_upstream_tokens_total{group=\"g\",upstream=\"u\",type=\"prompt\",client=\"\"}"));
        Assert.DoesNotContain(KeyA, metrics);
        Assert.DoesNotContain(ShaB, metrics);

        var access = proxy.Logs.Entries.Where(e => e.Id.Id == 1).Select(e => e.Message).ToList();
        Assert.Contains(access, l => l.Contains(" 200 ", StringComparison.Ordinal) && l.Contains(" client=team_a ", StringComparison.Ordinal));
        Assert.Contains(access, l => l.Contains(" 200 ", StringComparison.Ordinal) && l.Contains(" client=team_b ", StringComparison.Ordinal));
        Assert.Contains(access, l => l.Contains(" 401 ", StringComparison.Ordinal) && l.Contains("outcome=invalid_api_key", StringComparison.Ordinal)
            && l.Contains(" client=- ", StringComparison.Ordinal));
        Assert.DoesNotContain(proxy.Logs.Entries, e => e.Message.Contains(KeyA, StringComparison.Ordinal) || e.Message.Contains("nope-nope", StringComparison.Ordinal));
    }

    [Fact]
    public async Task KeepAliveConnection_SameKeyHashedOnce_AnotherKeyOrAWrongOneStillChecked_EachConnectionOnItsOwn()
    {
        await using var upstream = await ScriptedUpstream.StartAsync(WithUsage(7, 5));
        var keys = Keys();
        var yaml = () => TestProxy.Config($"- name: u\n  url: \"{upstream.Url}\"", "- name: u", forwardExtra: keys);
        await using var proxy = await TestProxy.StartAsync(yaml(), reloadYaml: yaml);
        var table = proxy.Host.Runtime.Forwards[0].ClientKeys!;
        using var handler = new SocketsHttpHandler { MaxConnectionsPerServer = 1 };
        using var client = new HttpClient(handler) { BaseAddress = new Uri(proxy.ForwardUrl()) };

        async Task<HttpStatusCode> Send(string? header, string? value)
        {
            using var request = Post(header, value);
            using var response = await client.SendAsync(request);
            return response.StatusCode;
        }

        // One connection (one at a time), the same key three times: hashed once.
        for (var i = 0; i < 3; i++)
        {
            Assert.Equal(HttpStatusCode.OK, await Send("Authorization", "Bearer " + KeyA));
        }
        Assert.Equal(1, table.DigestsComputed);
        // A key of the same length that differs in its last character, then another key, then the first again — each
        // checked against the table and answered as its own.
        Assert.Equal(HttpStatusCode.Unauthorized, await Send("Authorization", "Bearer " + KeyA[..^1] + "X"));
        Assert.Equal(HttpStatusCode.OK, await Send("x-api-key", KeyB));
        Assert.Equal(HttpStatusCode.OK, await Send("x-api-key", KeyB));
        Assert.Equal(HttpStatusCode.OK, await Send("Authorization", "Bearer " + KeyA));
        Assert.Equal(4, table.DigestsComputed);
        // No key after a key: refused, nothing hashed.
        Assert.Equal(HttpStatusCode.Unauthorized, await Send(null, null));
        Assert.Equal(4, table.DigestsComputed);
        // The longest key there can be, and one over it, after a key: refused; the longest is hashed, the other never is.
        Assert.Equal(HttpStatusCode.Unauthorized, await Send("x-api-key", new string('k', LLMProxy.Configuration.ClientKeyConfig.MaxKeyLength)));
        Assert.Equal(HttpStatusCode.Unauthorized, await Send("x-api-key", new string('k', LLMProxy.Configuration.ClientKeyConfig.MaxKeyLength + 1)));
        Assert.Equal(5, table.DigestsComputed);
        // Refused keys do not replace the connection's last one: team_a's key again is not hashed.
        Assert.Equal(HttpStatusCode.OK, await Send("Authorization", "Bearer " + KeyA));
        Assert.Equal(5, table.DigestsComputed);
        // Another connection does not inherit this one's key.
        Assert.Equal(HttpStatusCode.OK, await SendAsync(proxy, Post()));
        Assert.Equal(6, table.DigestsComputed);

        await AssertSampleAsync(proxy.Admin, "llmproxy_http_requests_total{forward=\"fwd\",method=\"POST\",status=\"200\",client=\"team_a\"}", 6);
        await AssertSampleAsync(proxy.Admin, "llmproxy_http_requests_total{forward=\"fwd\",method=\"POST\",status=\"200\",client=\"team_b\"}", 2);

        // The connection's last key is team_b's; a reload removes team_b: the same key on the same connection is refused.
        Assert.Equal(HttpStatusCode.OK, await Send("x-api-key", KeyB));
        keys = $"keys:\n  - name: team_a\n    key: \"{KeyA}\"";
        using (var reload = await proxy.Admin.PostAsync("/api/v1/reload", null))
        {
            Assert.Equal(HttpStatusCode.OK, reload.StatusCode);
        }
        Assert.Equal(HttpStatusCode.Unauthorized, await Send("x-api-key", KeyB));
    }

    [Fact]
    public async Task Reload_UnchangedKeyKeepsItsBucket_RemovedKeysSeriesGo_ChangedKeyStartsAfresh()
    {
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u"));
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        var limited = "ratelimit: { perSecond: 1, burst: 1 }";
        var keys = Keys(limited);
        var yaml = () => TestProxy.Config($"- name: u\n  url: \"{upstream.Url}\"", "- name: u", forwardExtra: keys);
        await using var proxy = await TestProxy.StartAsync(yaml(), time, yaml);

        Assert.Equal(HttpStatusCode.OK, await SendAsync(proxy, Post()));
        Assert.Equal(HttpStatusCode.OK, await SendAsync(proxy, Post(value: "Bearer " + KeyB)));
        Assert.Equal(HttpStatusCode.TooManyRequests, await SendAsync(proxy, Post()));

        // team_a unchanged, team_b removed: team_a's spent burst stays spent; team_b's key no longer opens anything.
        keys = $"keys:\n  - name: team_a\n    key: \"{KeyA}\"\n    {limited}";
        using (var reload = await proxy.Admin.PostAsync("/api/v1/reload", null))
        {
            Assert.Equal(HttpStatusCode.OK, reload.StatusCode);
        }
        Assert.Equal(HttpStatusCode.TooManyRequests, await SendAsync(proxy, Post()));
        Assert.Equal(HttpStatusCode.Unauthorized, await SendAsync(proxy, Post(value: "Bearer " + KeyB)));
        await Eventually.WaitUntilAsync(async () => !(await proxy.Admin.GetStringAsync("/metrics")).Contains("client=\"team_b\"", StringComparison.Ordinal),
            TimeSpan.FromSeconds(10));

        // A changed model list with the same key and limits keeps the team's spent allowance: a reload that only edits
        // what the key may ask for hands it no fresh bucket.
        keys = $"keys:\n  - name: team_a\n    key: \"{KeyA}\"\n    {limited}\n    models: [\"gpt-4o*\"]";
        using (var reload = await proxy.Admin.PostAsync("/api/v1/reload", null))
        {
            Assert.Equal(HttpStatusCode.OK, reload.StatusCode);
        }
        Assert.Equal(HttpStatusCode.TooManyRequests, await SendAsync(proxy, Post()));

        // A changed limit is a new bucket.
        keys = $"keys:\n  - name: team_a\n    key: \"{KeyA}\"\n    ratelimit: {{ perSecond: 1, burst: 2 }}";
        using (var reload = await proxy.Admin.PostAsync("/api/v1/reload", null))
        {
            Assert.Equal(HttpStatusCode.OK, reload.StatusCode);
        }
        Assert.Equal(HttpStatusCode.OK, await SendAsync(proxy, Post()));
        Assert.Contains("client=\"team_a\"", await proxy.Admin.GetStringAsync("/metrics"));
    }

    [Fact]
    public async Task Unauthenticated_TouchNoUpstreamState_BreakersAndBudgetsUnchanged()
    {
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u", 500));
        await using var proxy = await StartAsync(upstream, Keys(),
            upstreamExtra: "  breaker: { threshold: 0.5, minRequests: 2, cooldown: 60000 }\n  ratelimit: { perSecond: 1, burst: 2, tokensPerMinute: 5000 }");

        for (var i = 0; i < 20; i++)
        {
            Assert.Equal(HttpStatusCode.Unauthorized, await SendAsync(proxy, Post(value: "Bearer guess-" + i)));
        }
        Assert.Equal(0, upstream.Count);
        var metrics = await proxy.Admin.GetStringAsync("/metrics");
        AssertSample(metrics, "llmproxy_circuit_breaker_state{upstream=\"u\"}", 0);
        AssertSample(metrics, "llmproxy_upstream_budget_remaining{upstream=\"u\",budget=\"tokens_per_minute\"}", 5000);
        Assert.Equal(0, Sum(metrics, "llmproxy_upstream_requests_total"));
        Assert.Equal(0, Sum(metrics, "llmproxy_rate_limit_rejections_total"));
    }
}
