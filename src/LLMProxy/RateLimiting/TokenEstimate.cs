namespace LLMProxy.RateLimiting;

/// <summary>What a request is expected to cost in LLM tokens before the answer says (SPEC §13.1).</summary>
internal static class TokenEstimate
{
    /// <summary>Output assumed for a request without a max-output field.</summary>
    public const long DefaultOutput = 1024;

    /// <summary>Prompt ≈ body bytes ÷ 4, plus the request's max-output field or <see cref="DefaultOutput"/>.</summary>
    public static long For(long bodyBytes, long? maxOutputTokens) =>
        Math.Max(0, bodyBytes) / 4 + Math.Clamp(maxOutputTokens ?? DefaultOutput, 0, long.MaxValue / 2);
}
