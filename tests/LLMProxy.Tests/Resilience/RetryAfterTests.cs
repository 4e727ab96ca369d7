using System.Net.Http.Headers;
using LLMProxy.Resilience;

namespace LLMProxy.Tests.Resilience;

public class RetryAfterTests
{
    private static readonly DateTimeOffset Now = new(2025, 3, 14, 12, 0, 0, TimeSpan.Zero);

    private static HttpResponseHeaders Headers(params (string Name, string Value)[] headers)
    {
        using var response = new HttpResponseMessage();
        foreach ((string name, string value) in headers)
        {
            response.Headers.TryAddWithoutValidation(name, value);
        }

        return response.Headers;
    }

    private static TimeSpan? Parse(params (string Name, string Value)[] headers) => RetryAfter.Parse(Headers(headers), Now);

    [Fact]
    public void Parse_NoHeaders_Null() => Assert.Null(Parse());

    [Fact]
    public void Parse_RetryAfterDeltaSeconds_ThatMany() =>
        Assert.Equal(TimeSpan.FromSeconds(20), Parse(("Retry-After", "20")));

    [Fact]
    public void Parse_RetryAfterDecimalSeconds_Tolerated() =>
        Assert.Equal(TimeSpan.FromMilliseconds(1500), Parse(("Retry-After", "1.5")));

    [Fact]
    public void Parse_RetryAfterHttpDate_DifferenceFromNow() =>
        Assert.Equal(TimeSpan.FromSeconds(90), Parse(("Retry-After", "Fri, 14 Mar 2025 12:01:30 GMT")));

    [Fact]
    public void Parse_RetryAfterDateInPast_Zero() =>
        Assert.Equal(TimeSpan.Zero, Parse(("Retry-After", "Fri, 14 Mar 2025 11:00:00 GMT")));

    [Theory]
    [InlineData("soon")]
    [InlineData("-5")]
    [InlineData("")]
    public void Parse_RetryAfterInvalid_Ignored(string value) => Assert.Null(Parse(("Retry-After", value)));

    [Fact]
    public void Parse_RetryAfterMs_Milliseconds() =>
        Assert.Equal(TimeSpan.FromMilliseconds(1234), Parse(("retry-after-ms", "1234")));

    [Fact]
    public void Parse_RetryAfterMsFractional_Milliseconds() =>
        Assert.Equal(TimeSpan.FromTicks(2_505_000), Parse(("retry-after-ms", "250.5")));

    [Theory]
    [InlineData("1s", 1_000)]
    [InlineData("6m0s", 360_000)]
    [InlineData("20ms", 20)]
    [InlineData("1.5s", 1_500)]
    [InlineData("1h2m3.5s", 3_723_500)]
    [InlineData("0", 0)]
    [InlineData("0s", 0)]
    [InlineData("500us", 0.5)]
    [InlineData("500µs", 0.5)]
    [InlineData("2000000ns", 2)]
    [InlineData("7", 7_000)]
    [InlineData("+3s", 3_000)]
    public void Parse_OpenAiResetRequests_GoDuration(string value, double expectedMs) =>
        Assert.Equal(TimeSpan.FromMilliseconds(expectedMs), Parse(("x-ratelimit-reset-requests", value)));

    [Fact]
    public void Parse_OpenAiResetTokens_GoDuration() =>
        Assert.Equal(TimeSpan.FromSeconds(6), Parse(("x-ratelimit-reset-tokens", "6s")));

    [Theory]
    [InlineData("-1s")]
    [InlineData("1x")]
    [InlineData("s")]
    [InlineData("1s2")]
    [InlineData("1..2s")]
    public void Parse_InvalidGoDuration_Ignored(string value) => Assert.Null(Parse(("x-ratelimit-reset-requests", value)));

    [Fact]
    public void Parse_AnthropicRequestsReset_Rfc3339() =>
        Assert.Equal(TimeSpan.FromSeconds(42), Parse(("anthropic-ratelimit-requests-reset", "2025-03-14T12:00:42Z")));

    [Fact]
    public void Parse_AnthropicRequestsResetWithOffset_ConvertedToUtc() =>
        Assert.Equal(TimeSpan.FromSeconds(30), Parse(("anthropic-ratelimit-requests-reset", "2025-03-14T13:00:30+01:00")));

    [Fact]
    public void Parse_AnthropicResetInPast_Zero() =>
        Assert.Equal(TimeSpan.Zero, Parse(("anthropic-ratelimit-requests-reset", "2025-03-14T11:59:00Z")));

    [Fact]
    public void Parse_SeveralHints_Largest()
    {
        TimeSpan? hint = Parse(
            ("Retry-After", "2"),
            ("retry-after-ms", "1500"),
            ("x-ratelimit-reset-requests", "8.5s"),
            ("x-ratelimit-reset-tokens", "3s"),
            ("anthropic-ratelimit-requests-reset", "2025-03-14T12:00:05Z"));
        Assert.Equal(TimeSpan.FromMilliseconds(8500), hint);
    }

    [Fact]
    public void Parse_OneValidOneInvalid_UsesValid() =>
        Assert.Equal(TimeSpan.FromSeconds(4), Parse(("Retry-After", "garbage"), ("x-ratelimit-reset-tokens", "4s")));

    [Fact]
    public void Parse_HeaderNamesCaseInsensitive() =>
        Assert.Equal(TimeSpan.FromMilliseconds(700), Parse(("RETRY-AFTER-MS", "700")));

    [Fact]
    public void Parse_TypedRetryAfterHeader_Read()
    {
        using var response = new HttpResponseMessage();
        response.Headers.RetryAfter = new RetryConditionHeaderValue(TimeSpan.FromSeconds(11));
        Assert.Equal(TimeSpan.FromSeconds(11), RetryAfter.Parse(response.Headers, Now));
    }

    [Fact]
    public void CoolDownFor_Null_DefaultFiveSeconds() =>
        Assert.Equal(TimeSpan.FromSeconds(5), RetryAfter.CoolDownFor(null));

    [Fact]
    public void CoolDownFor_InRange_Unchanged() =>
        Assert.Equal(TimeSpan.FromSeconds(12), RetryAfter.CoolDownFor(TimeSpan.FromSeconds(12)));

    [Fact]
    public void CoolDownFor_TooShort_ClampedTo100Ms()
    {
        Assert.Equal(TimeSpan.FromMilliseconds(100), RetryAfter.CoolDownFor(TimeSpan.Zero));
        Assert.Equal(TimeSpan.FromMilliseconds(100), RetryAfter.CoolDownFor(TimeSpan.FromMilliseconds(20)));
    }

    [Fact]
    public void CoolDownFor_TooLong_ClampedToFiveMinutes() =>
        Assert.Equal(TimeSpan.FromMinutes(5), RetryAfter.CoolDownFor(TimeSpan.FromHours(1)));
}
