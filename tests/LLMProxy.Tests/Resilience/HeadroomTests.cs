using System.Net.Http.Headers;
using LLMProxy.RateLimiting;
using LLMProxy.Resilience;

namespace LLMProxy.Tests.Resilience;

public class HeadroomTests
{
    private static readonly DateTimeOffset Now = new(2026, 1, 2, 3, 4, 5, TimeSpan.Zero);

    private static HttpResponseHeaders Headers(params (string Name, string Value)[] values)
    {
        var response = new HttpResponseMessage();
        foreach (var (name, value) in values)
        {
            response.Headers.TryAddWithoutValidation(name, value);
        }
        return response.Headers;
    }

    [Fact]
    public void Parse_NoHeaders_Null() => Assert.Null(Headroom.Parse(Headers(("x-other", "1")), Now));

    [Fact]
    public void Parse_OpenAi_RemainingWithDurationResets()
    {
        var h = Headroom.Parse(Headers(
            ("x-ratelimit-remaining-requests", "0"), ("x-ratelimit-reset-requests", "1.5s"),
            ("x-ratelimit-remaining-tokens", "1200"), ("x-ratelimit-reset-tokens", "1h2m3.5s")), Now)!;
        Assert.Equal(0, h.RemainingRequests);
        Assert.Equal(Now.AddSeconds(1.5), h.RequestsReset);
        Assert.Equal(1200, h.RemainingTokens);
        Assert.Equal(Now + Headroom.MaxReset, h.TokensReset); // an hour is cut to the cap
    }

    [Theory]
    [InlineData("6m0s", 300_000)] // capped at 5 min
    [InlineData("20ms", 20)]
    [InlineData("2m", 120_000)]
    public void Parse_OpenAi_Durations(string reset, double ms)
    {
        var h = Headroom.Parse(Headers(("x-ratelimit-remaining-tokens", "5"), ("x-ratelimit-reset-tokens", reset)), Now)!;
        Assert.Equal(Now.AddMilliseconds(ms), h.TokensReset);
    }

    [Fact]
    public void Parse_Anthropic_InputAndOutputTokensKeptApartFromTheCombinedCount()
    {
        var reset = Now.AddSeconds(30).ToString("yyyy-MM-ddTHH:mm:ssZ");
        var soon = Now.AddSeconds(10).ToString("yyyy-MM-ddTHH:mm:ssZ");
        var h = Headroom.Parse(Headers(
            ("anthropic-ratelimit-requests-remaining", "7"), ("anthropic-ratelimit-requests-reset", reset),
            ("anthropic-ratelimit-tokens-remaining", "9000"), ("anthropic-ratelimit-tokens-reset", reset),
            ("anthropic-ratelimit-input-tokens-remaining", "8000"), ("anthropic-ratelimit-input-tokens-reset", reset),
            ("anthropic-ratelimit-output-tokens-remaining", "300"), ("anthropic-ratelimit-output-tokens-reset", soon)), Now)!;
        Assert.Equal(7, h.RemainingRequests);
        Assert.Equal(9000, h.RemainingTokens);
        Assert.Equal(Now.AddSeconds(30), h.TokensReset);
        Assert.Equal(new Headroom.Pool(8000, Now.AddSeconds(30), null), h.InputTokens);
        Assert.Equal(new Headroom.Pool(300, Now.AddSeconds(10), null), h.OutputTokens);
    }

    [Fact]
    public void Parse_Anthropic_OnlyInputAndOutputPairs_IsHeadroom()
    {
        var reset = Now.AddSeconds(30).ToString("yyyy-MM-ddTHH:mm:ssZ");
        var h = Headroom.Parse(Headers(
            ("anthropic-ratelimit-output-tokens-remaining", "0"), ("anthropic-ratelimit-output-tokens-reset", reset),
            ("anthropic-ratelimit-output-tokens-limit", "16000")), Now)!;
        Assert.Null(h.RemainingTokens);
        Assert.Null(h.InputTokens);
        Assert.Equal(new Headroom.Pool(0, Now.AddSeconds(30), 16000), h.OutputTokens);
        Assert.True(h.Blocks(new TokenNeed(10, 1), Now));
    }

    /// <summary>Anthropic's tier-2 numbers (80,000 input and 16,000 output tokens a minute) after some use: a 20,000-token
    /// prompt with a 1,024-token answer fits both limits, though it is more than the output tokens left — and a
    /// 20,000-token answer does not, however short its prompt.</summary>
    [Fact]
    public void Blocks_Anthropic_PromptAskedOfInputTokens_OutputOfOutputTokens()
    {
        var h = new Headroom(null, null, null, null, LearnedAt: Now,
            InputTokens: new Headroom.Pool(70_000, Now.AddSeconds(8), 80_000),
            OutputTokens: new Headroom.Pool(15_000, Now.AddSeconds(4), 16_000));
        Assert.False(h.Blocks(new TokenNeed(21_024, 1_024), Now));
        Assert.True(h.Blocks(new TokenNeed(20_100, 20_000), Now));
        Assert.True(h.Blocks(new TokenNeed(75_000, 1_000), Now));
        // The output limit gets its 1,000 back in the 4 s to its reset: 5,000 more would take 20 s, so the reset it is.
        Assert.Equal(Now.AddSeconds(4), h.BlockedUntil(new TokenNeed(20_100, 20_000), Now));
        // What went out since counts against each side: 14,500 output tokens sent leave 500.
        Assert.True(h.Blocks(new TokenNeed(2_000, 1_000), Now, new Headroom.Sent(3, 50_000, 14_500)));
        Assert.False(h.Blocks(new TokenNeed(2_000, 400), Now, new Headroom.Sent(3, 50_000, 14_500)));
        // A total without its split (admin checks): the input side is asked for all of it, the output side for one token.
        Assert.False(h.Blocks(60_000, Now));
        Assert.True(h.Blocks(71_000, Now));
    }

    [Theory]
    [InlineData("-5", "1s")]
    [InlineData("99999999999999999999999", "1s")]
    [InlineData("10000000000000000", "1s")]
    [InlineData("abc", "1s")]
    [InlineData("1.5", "1s")]
    [InlineData("5", "-1s")]
    [InlineData("5", "garbage")]
    [InlineData("5", "0s")]
    [InlineData("", "1s")]
    public void Parse_HostileOpenAiValues_Ignored(string remaining, string reset) =>
        Assert.Null(Headroom.Parse(Headers(("x-ratelimit-remaining-tokens", remaining), ("x-ratelimit-reset-tokens", reset)), Now));

    [Theory]
    [InlineData("2020-01-01T00:00:00Z")] // past
    [InlineData("not a date")]
    [InlineData("9999-99-99T00:00:00Z")]
    public void Parse_HostileAnthropicResets_Ignored(string reset) =>
        Assert.Null(Headroom.Parse(Headers(("anthropic-ratelimit-tokens-remaining", "0"), ("anthropic-ratelimit-tokens-reset", reset)), Now));

    [Fact]
    public void Parse_FarFutureDate_CappedNotBelieved()
    {
        var h = Headroom.Parse(Headers(("anthropic-ratelimit-requests-remaining", "0"), ("anthropic-ratelimit-requests-reset", "2999-01-01T00:00:00Z")), Now)!;
        Assert.Equal(Now + Headroom.MaxReset, h.RequestsReset);
    }

    [Fact]
    public void Parse_RemainingWithoutReset_Ignored() =>
        Assert.Null(Headroom.Parse(Headers(("x-ratelimit-remaining-tokens", "0")), Now));

    [Fact]
    public void Blocks_TokensBelowEstimateUntilReset()
    {
        var h = new Headroom(null, null, 500, Now.AddSeconds(5));
        Assert.False(h.Blocks(400, Now));
        Assert.True(h.Blocks(600, Now));
        Assert.Equal(Now.AddSeconds(5), h.BlockedUntil(600, Now));
        Assert.False(h.Blocks(600, Now.AddSeconds(5))); // after the reset: used again
        Assert.Null(h.BlockedUntil(400, Now));
    }

    [Fact]
    public void Blocks_NoRequestsLeftUntilReset()
    {
        var h = new Headroom(0, Now.AddSeconds(2), null, null);
        Assert.True(h.Blocks(1, Now));
        Assert.False(h.Blocks(1, Now.AddSeconds(3)));
        Assert.False(new Headroom(1, Now.AddSeconds(2), null, null).Blocks(1, Now));
    }

    [Fact]
    public void Blocks_LimitKnown_RefillsEvenlyUntilReset_NotTheWholeWait()
    {
        // 0 of 6,000 left, full again in 60 s: 100 tokens a second come back.
        var h = new Headroom(null, null, 0, Now.AddSeconds(60), TokensLimit: 6000, LearnedAt: Now);
        Assert.Equal(Now.AddSeconds(1.5), h.BlockedUntil(150, Now));
        Assert.True(h.Blocks(150, Now.AddSeconds(1.4)));
        Assert.False(h.Blocks(150, Now.AddSeconds(1.5)));
        // 100 estimated tokens sent since the answer: they are not in the provider's numbers yet.
        Assert.Equal(Now.AddSeconds(2.5), h.BlockedUntil(150, Now, new Headroom.Sent(0, 100, 0)));
        // More than a full bucket: only the reset helps.
        Assert.Equal(Now.AddSeconds(60), h.BlockedUntil(7000, Now));
    }

    [Fact]
    public void Blocks_RequestsLimitKnown_OneRequestBackAfterItsShare()
    {
        var h = new Headroom(0, Now.AddSeconds(60), null, null, RequestsLimit: 60, LearnedAt: Now);
        Assert.Equal(Now.AddSeconds(1), h.BlockedUntil(1, Now));
        Assert.Equal(Now.AddSeconds(3), h.BlockedUntil(1, Now, new Headroom.Sent(2, 0, 0)));
    }

    [Fact]
    public void Parse_LimitsRead_AndAHostileLimitFallsBackToTheWholeWait()
    {
        var openai = Headroom.Parse(Headers(
            ("x-ratelimit-limit-tokens", "6000"), ("x-ratelimit-remaining-tokens", "0"), ("x-ratelimit-reset-tokens", "1m0s"),
            ("x-ratelimit-limit-requests", "60"), ("x-ratelimit-remaining-requests", "5"), ("x-ratelimit-reset-requests", "55s")), Now)!;
        Assert.Equal(6000, openai.TokensLimit);
        Assert.Equal(60, openai.RequestsLimit);
        Assert.Equal(Now, openai.LearnedAt);
        Assert.Equal(Now.AddSeconds(1.5), openai.BlockedUntil(150, Now));

        var reset = Now.AddSeconds(60).ToString("yyyy-MM-ddTHH:mm:ssZ");
        var anthropic = Headroom.Parse(Headers(("anthropic-ratelimit-tokens-limit", "6000"),
            ("anthropic-ratelimit-tokens-remaining", "0"), ("anthropic-ratelimit-tokens-reset", reset)), Now)!;
        Assert.Equal(Now.AddSeconds(1.5), anthropic.BlockedUntil(150, Now));

        foreach (var hostile in new[] { "-1", "0", "abc", "10000000000000000", "1.5" })
        {
            var h = Headroom.Parse(Headers(("x-ratelimit-limit-tokens", hostile), ("x-ratelimit-remaining-tokens", "0"),
                ("x-ratelimit-reset-tokens", "60s")), Now)!;
            Assert.Null(h.TokensLimit);
            Assert.Equal(Now.AddSeconds(60), h.BlockedUntil(150, Now));
        }
        // A limit not above the remaining says nothing about a refill rate.
        var odd = Headroom.Parse(Headers(("x-ratelimit-limit-tokens", "10"), ("x-ratelimit-remaining-tokens", "20"),
            ("x-ratelimit-reset-tokens", "60s")), Now)!;
        Assert.Equal(Now.AddSeconds(60), odd.BlockedUntil(150, Now));
    }
}
