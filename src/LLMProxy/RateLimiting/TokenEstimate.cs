namespace LLMProxy.RateLimiting;

/// <summary>What a request is expected to cost in LLM tokens before the answer says (SPEC §13.1).</summary>
internal static class TokenEstimate
{
    /// <summary>Output assumed for a request without a max-output field.</summary>
    public const long DefaultOutput = 1024;

    /// <summary>Prompt ≈ body bytes ÷ 4, plus the request's max-output field or <see cref="DefaultOutput"/>.</summary>
    public static long For(long bodyBytes, long? maxOutputTokens) => Need(bodyBytes, maxOutputTokens).Total;

    /// <summary><see cref="For"/> with its output part kept apart (for providers that limit input and output
    /// separately).</summary>
    public static TokenNeed Need(long bodyBytes, long? maxOutputTokens)
    {
        var output = Math.Clamp(maxOutputTokens ?? DefaultOutput, 0, long.MaxValue / 2);
        return new TokenNeed(Math.Max(0, bodyBytes) / 4 + output, output);
    }
}
