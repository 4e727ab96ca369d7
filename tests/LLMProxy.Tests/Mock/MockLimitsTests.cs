using System.Globalization;
using System.Net;
using System.Text.Json;
using LLMProxy.Mock;
using LLMProxy.Tests.Forwarding;
using LLMProxy.Tests.Infrastructure;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Time.Testing;
using static LLMProxy.Tests.Mock.MockTestSupport;

namespace LLMProxy.Tests.Mock;

/// <summary>The mock enforcing per-key limits like a provider (<c>--tpm</c>, <c>--rpm</c>): token buckets per API key,
/// 429 <c>rate_limit_exceeded</c> with the real headers, refill with (fake) time, and the proxy's headroom learning
/// meeting it.</summary>
public class MockLimitsTests
{
    /// <summary>40 bytes: 10 prompt tokens (bytes ÷ 4) for the mock and for the proxy's estimate, plus max_tokens 10.</summary>
    private const string Body = """{"model":"m","max_tokens":10,"x":"abcd"}""";
    /// <summary>The usage the mock reports for <see cref="Body"/> with 10 chunks: 10 prompt + 10 completion.</summary>
    private const int Cost = 20;

    private static FakeTimeProvider Time() => new(DateTimeOffset.Parse("2026-11-30T12:00:00Z", CultureInfo.InvariantCulture));

    private static MockOptions Limited(TimeProvider time, long tpm = 100, int rpm = 0, bool headers = true) =>
        new() { TimeProvider = time, TokensPerMinute = tpm, RequestsPerMinute = rpm, RateLimitHeaders = headers, Chunks = 10, ChunkIntervalMs = 0 };

    private static HttpRequestMessage Keyed(string key, string path = "/v1/chat/completions", string header = "Authorization")
    {
        Assert.Equal(40, Body.Length);
        var request = Chat(Body, path);
        request.Headers.TryAddWithoutValidation(header, header == "Authorization" ? "Bearer " + key : key);
        return request;
    }

    private static string Header(HttpResponseMessage response, string name) => response.Headers.GetValues(name).Single();

    [Fact]
    public async Task Tpm_KeyOutOfTokens_429RateLimitExceeded_WithHeadersAndRetryAfter()
    {
        var time = Time();
        await using var server = await StartAsync(Limited(time));
        using var client = Client(server);

        for (var i = 1; i <= 5; i++)
        {
            using var ok = await client.SendAsync(Keyed("k1"));
            Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
            using var doc = JsonDocument.Parse(await ok.Content.ReadAsStringAsync());
            Assert.Equal(Cost, doc.RootElement.GetProperty("usage").GetProperty("total_tokens").GetInt32());
            Assert.Equal("100", Header(ok, "x-ratelimit-limit-tokens"));
            Assert.Equal((100 - i * Cost).ToString(CultureInfo.InvariantCulture), Header(ok, "x-ratelimit-remaining-tokens"));
            // Full again when the used tokens have flowed back at 100 per minute: 12 s per request's 20.
            Assert.Equal(MockLimits.FormatDuration(TimeSpan.FromSeconds(12 * i)), Header(ok, "x-ratelimit-reset-tokens"));
            Assert.False(ok.Headers.Contains("retry-after"));
        }

        using var limited = await client.SendAsync(Keyed("k1"));
        Assert.Equal(HttpStatusCode.TooManyRequests, limited.StatusCode);
        Assert.Equal("application/json", limited.Content.Headers.ContentType?.MediaType);
        using var body = JsonDocument.Parse(await limited.Content.ReadAsStringAsync());
        var error = body.RootElement.GetProperty("error");
        Assert.Equal("rate_limit_exceeded", error.GetProperty("code").GetString());
        Assert.Equal("tokens", error.GetProperty("type").GetString());
        Assert.Contains("Limit 100", error.GetProperty("message").GetString(), StringComparison.Ordinal);
        Assert.Equal("0", Header(limited, "x-ratelimit-remaining-tokens"));
        Assert.Equal("1m0s", Header(limited, "x-ratelimit-reset-tokens"));
        Assert.Equal("12", Header(limited, "retry-after")); // 20 tokens at 100/min
        Assert.Equal(1, server.RateLimitedCount);
        Assert.Equal(5 * Cost, server.TokensCharged);
    }

    [Fact]
    public async Task Tpm_RefillsWithTime_PartlyAfterRetryAfter_FullAfterAMinute()
    {
        var time = Time();
        await using var server = await StartAsync(Limited(time));
        using var client = Client(server);
        for (var i = 0; i < 5; i++)
            (await client.SendAsync(Keyed("k1"))).Dispose();
        using (var limited = await client.SendAsync(Keyed("k1")))
            Assert.Equal(HttpStatusCode.TooManyRequests, limited.StatusCode);

        time.Advance(TimeSpan.FromSeconds(11.9));
        using (var early = await client.SendAsync(Keyed("k1")))
            Assert.Equal(HttpStatusCode.TooManyRequests, early.StatusCode);
        time.Advance(TimeSpan.FromSeconds(0.1));
        using (var exact = await client.SendAsync(Keyed("k1")))
        {
            Assert.Equal(HttpStatusCode.OK, exact.StatusCode);
            Assert.Equal("0", Header(exact, "x-ratelimit-remaining-tokens"));
        }

        time.Advance(TimeSpan.FromMinutes(5)); // the bucket holds one minute, never more
        using var full = await client.SendAsync(Keyed("k1"));
        Assert.Equal("80", Header(full, "x-ratelimit-remaining-tokens"));
        Assert.Equal(2, server.RateLimitedCount);
    }

    [Fact]
    public async Task Keys_HaveTheirOwnBuckets_AuthorizationAndXApiKey()
    {
        var time = Time();
        await using var server = await StartAsync(Limited(time, tpm: Cost));
        using var client = Client(server);

        using (var first = await client.SendAsync(Keyed("k1")))
            Assert.Equal(HttpStatusCode.OK, first.StatusCode);
        using (var again = await client.SendAsync(Keyed("k1")))
            Assert.Equal(HttpStatusCode.TooManyRequests, again.StatusCode);
        using (var other = await client.SendAsync(Keyed("k2")))
            Assert.Equal(HttpStatusCode.OK, other.StatusCode);
        using (var anthropicKey = await client.SendAsync(Keyed("k1", header: "x-api-key")))
            Assert.Equal(HttpStatusCode.OK, anthropicKey.StatusCode); // "k1" is not "Bearer k1"
        using (var sameAnthropicKey = await client.SendAsync(Keyed("k1", header: "x-api-key")))
            Assert.Equal(HttpStatusCode.TooManyRequests, sameAnthropicKey.StatusCode);
    }

    [Fact]
    public async Task Rpm_ThirdRequestInAMinute_429Requests()
    {
        var time = Time();
        await using var server = await StartAsync(Limited(time, tpm: 0, rpm: 2));
        using var client = Client(server);

        using (var ok = await client.SendAsync(Keyed("k")))
        {
            Assert.Equal("2", Header(ok, "x-ratelimit-limit-requests"));
            Assert.Equal("1", Header(ok, "x-ratelimit-remaining-requests"));
            Assert.Equal("30s", Header(ok, "x-ratelimit-reset-requests"));
            Assert.False(ok.Headers.Contains("x-ratelimit-limit-tokens"));
        }
        (await client.SendAsync(Keyed("k"))).Dispose();
        using var limited = await client.SendAsync(Keyed("k"));
        Assert.Equal(HttpStatusCode.TooManyRequests, limited.StatusCode);
        Assert.Equal("30", Header(limited, "retry-after"));
        using var body = JsonDocument.Parse(await limited.Content.ReadAsStringAsync());
        Assert.Equal("requests", body.RootElement.GetProperty("error").GetProperty("type").GetString());
    }

    [Fact]
    public async Task Messages_AnthropicHeadersAndRateLimitErrorBody()
    {
        var time = Time();
        await using var server = await StartAsync(Limited(time, tpm: Cost));
        using var client = Client(server);

        using (var ok = await client.SendAsync(Keyed("k", "/v1/messages", "x-api-key")))
        {
            Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
            Assert.Equal("0", Header(ok, "anthropic-ratelimit-tokens-remaining"));
            Assert.Equal("2026-11-30T12:01:00.000Z", Header(ok, "anthropic-ratelimit-tokens-reset"));
            Assert.False(ok.Headers.Contains("x-ratelimit-remaining-tokens"));
        }
        using var limited = await client.SendAsync(Keyed("k", "/v1/messages", "x-api-key"));
        Assert.Equal(HttpStatusCode.TooManyRequests, limited.StatusCode);
        using var body = JsonDocument.Parse(await limited.Content.ReadAsStringAsync());
        Assert.Equal("error", body.RootElement.GetProperty("type").GetString());
        Assert.Equal("rate_limit_error", body.RootElement.GetProperty("error").GetProperty("type").GetString());
        Assert.Equal("60", Header(limited, "retry-after"));
    }

    [Fact]
    public async Task NoRateLimitHeaders_OnlyRetryAfterOnThe429()
    {
        var time = Time();
        await using var server = await StartAsync(Limited(time, tpm: Cost, headers: false));
        using var client = Client(server);

        using (var ok = await client.SendAsync(Keyed("k")))
            Assert.DoesNotContain(ok.Headers, h => h.Key.StartsWith("x-ratelimit-", StringComparison.OrdinalIgnoreCase));
        using var limited = await client.SendAsync(Keyed("k"));
        Assert.Equal(HttpStatusCode.TooManyRequests, limited.StatusCode);
        Assert.Equal("60", Header(limited, "retry-after"));
        Assert.DoesNotContain(limited.Headers, h => h.Key.StartsWith("x-ratelimit-", StringComparison.OrdinalIgnoreCase));
    }

    [Fact]
    public async Task ScriptedHeadersWin_AndStatsEndpointCounts()
    {
        var time = Time();
        await using var server = await StartAsync(Limited(time, tpm: Cost) with { Name = "acct" });
        using var client = Client(server);

        using (var scripted = Keyed("k"))
        {
            scripted.Headers.Add("X-Mock-Ratelimit-Remaining-Tokens", "777");
            using var ok = await client.SendAsync(scripted);
            Assert.Equal("777", Header(ok, "x-ratelimit-remaining-tokens"));
            Assert.Equal("1m0s", Header(ok, "x-ratelimit-reset-tokens")); // the unscripted ones stay real
        }
        (await client.SendAsync(Keyed("k"))).Dispose();

        using var stats = JsonDocument.Parse(await client.GetStringAsync("/mock/stats"));
        Assert.Equal("acct", stats.RootElement.GetProperty("name").GetString());
        Assert.Equal(3, stats.RootElement.GetProperty("requests").GetInt64()); // this one included
        Assert.Equal(1, stats.RootElement.GetProperty("rateLimited").GetInt64());
        Assert.Equal(Cost, stats.RootElement.GetProperty("tokensCharged").GetInt64());
    }

    [Fact]
    public void ManyKeys_BeyondTheCapShareOneBucket()
    {
        var limits = new MockLimits(Limited(Time(), tpm: Cost));
        static IHeaderDictionary Key(int i) => new HeaderDictionary { ["Authorization"] = "Bearer k" + i.ToString(CultureInfo.InvariantCulture) };

        for (var i = 0; i < MockLimits.MaxKeys; i++)
            Assert.True(limits.Take(Key(i), 1).Allowed);
        // Two new keys: the first drains the shared overflow bucket, the second finds it empty.
        Assert.True(limits.Take(Key(-1), Cost).Allowed);
        Assert.False(limits.Take(Key(-2), Cost).Allowed);
        Assert.True(limits.Take(Key(5), Cost - 1).Allowed); // a key known before the cap keeps its own
    }

    [Theory]
    [InlineData(0, "0s")]
    [InlineData(0.0004, "1ms")]
    [InlineData(0.020, "20ms")]
    [InlineData(1.5, "1.5s")]
    [InlineData(59.9985, "59.999s")] // rounded up to the millisecond, then shown
    [InlineData(60, "1m0s")]
    [InlineData(360, "6m0s")]
    [InlineData(90.25, "1m30.25s")]
    public void FormatDuration_GoStyleAsOpenAiSendsIt(double seconds, string expected) =>
        Assert.Equal(expected, MockLimits.FormatDuration(TimeSpan.FromSeconds(seconds)));

    [Fact]
    public void Validate_NegativeLimits_Rejected()
    {
        var errors = new MockOptions { TokensPerMinute = -1, RequestsPerMinute = -2 }.Validate();
        Assert.Contains(errors, e => e.StartsWith("tpm:", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("rpm:", StringComparison.Ordinal));
    }

    /// <summary>End to end: two keys on one limited mock behind the proxy (no budgets configured). With the mock's headers
    /// the proxy learns each key's remaining tokens and stops sending to an exhausted key before it answers 429; without
    /// them the exhausted keys are found by their 429s. Either way the client gets 429 upstream_rate_limited, and the keys
    /// serve again once the minute has passed.</summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task ThroughProxy_HeadroomLearned_ExhaustedKeySkippedBeforeIt429s(bool headers)
    {
        var time = Time();
        await using var mock = await StartAsync(Limited(time, headers: headers));
        string url = mock.BaseUrl.ToString().TrimEnd('/');
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config($"""
            - name: a
              url: "{url}"
              auth: {"{"} type: bearer, token: key-a {"}"}
            - name: b
              url: "{url}"
              auth: {"{"} type: bearer, token: key-b {"}"}
            """, "- name: a\n- name: b"), time);

        for (var i = 0; i < 10; i++)
        {
            using var ok = await proxy.Client.SendAsync(Chat(Body));
            Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
        }
        Assert.Equal(0, mock.RateLimitedCount);

        using (var limited = await proxy.Client.SendAsync(Chat(Body)))
        {
            if (headers)
            {
                // Both keys said "0 left until the minute is over": neither was asked, the proxy answered.
                await StreamingAndErrorTests.AssertErrorBody(limited, HttpStatusCode.TooManyRequests, "upstream_rate_limited");
                Assert.Equal(10, mock.RequestCount);
                Assert.Equal(0, mock.RateLimitedCount);
            }
            else
            {
                // Each key found out by its 429 (the retry went to the other); the last 429 reaches the client as it came.
                Assert.Equal(HttpStatusCode.TooManyRequests, limited.StatusCode);
                Assert.Contains("rate_limit_exceeded", await limited.Content.ReadAsStringAsync(), StringComparison.Ordinal);
                Assert.Equal(2, mock.RateLimitedCount);
            }
            Assert.True(limited.Headers.RetryAfter?.Delta > TimeSpan.Zero);
        }

        time.Advance(TimeSpan.FromSeconds(60));
        using var again = await proxy.Client.SendAsync(Chat(Body));
        Assert.Equal(HttpStatusCode.OK, again.StatusCode);
    }

    /// <summary>A provider's reset is when its bucket is full again, and it refills all along: with the limit in the
    /// headers the proxy sends to the exhausted key again as soon as one request's worth has come back (12 s for 20
    /// tokens at 100 a minute), not a whole minute later — and still never into a 429.</summary>
    [Fact]
    public async Task ThroughProxy_ExhaustedKey_BackAsSoonAsItHasRefilledEnough()
    {
        var time = Time();
        await using var mock = await StartAsync(Limited(time));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config($"""
            - name: a
              url: "{mock.BaseUrl.ToString().TrimEnd('/')}"
              auth: {"{"} type: bearer, token: key-a {"}"}
            """, "- name: a"), time);

        for (var i = 0; i < 5; i++)
        {
            using var ok = await proxy.Client.SendAsync(Chat(Body));
            Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
        }
        using (var limited = await proxy.Client.SendAsync(Chat(Body)))
        {
            await StreamingAndErrorTests.AssertErrorBody(limited, HttpStatusCode.TooManyRequests, "upstream_rate_limited");
            Assert.Equal(TimeSpan.FromSeconds(12), limited.Headers.RetryAfter?.Delta);
        }
        time.Advance(TimeSpan.FromSeconds(11));
        using (var early = await proxy.Client.SendAsync(Chat(Body)))
            Assert.Equal(HttpStatusCode.TooManyRequests, early.StatusCode);
        time.Advance(TimeSpan.FromSeconds(1));
        using (var back = await proxy.Client.SendAsync(Chat(Body)))
            Assert.Equal(HttpStatusCode.OK, back.StatusCode);
        Assert.Equal(0, mock.RateLimitedCount);
        Assert.Equal(6, mock.RequestCount);
    }

    [Fact]
    public async Task Cli_MockTpmFlag_Enforced()
    {
        await using var process = ProxyProcess.Start("mock", "--port", "0", "--tpm", Cost.ToString(CultureInfo.InvariantCulture), "--chunks", "10");
        await process.WaitForOutputAsync("ready: mock upstream listening on ");
        var url = process.Stdout.Split(' ').First(w => w.StartsWith("http://", StringComparison.Ordinal));
        using var client = new HttpClient { BaseAddress = new Uri(url) };

        using (var ok = await client.SendAsync(Keyed("sk-storm-secret")))
            Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
        using var limited = await client.SendAsync(Keyed("sk-storm-secret"));
        Assert.Equal(HttpStatusCode.TooManyRequests, limited.StatusCode);
        Assert.Equal("60", Header(limited, "retry-after"));

        process.Signal(ProxyProcess.SIGTERM);
        Assert.Equal(0, await process.WaitForExitAsync(TimeSpan.FromSeconds(30)));
        Assert.DoesNotContain("sk-storm-secret", process.Stdout + process.Stderr, StringComparison.Ordinal);
    }
}
