namespace LLMProxy.RateLimiting;

/// <summary>
/// What a request is estimated to need in LLM tokens (SPEC §13.1): the whole estimate, which TPM budgets reserve and a
/// provider's single token limit must cover, and the part of it that is output — the request's max-output field or
/// <see cref="TokenEstimate.DefaultOutput"/>. Anthropic limits input and output tokens separately (and admits a request
/// by its <c>max_tokens</c>), so a key whose output tokens are nearly spent can still take a long prompt with a short
/// answer, and the other way round; a single number cannot tell those apart.
/// </summary>
/// <param name="Total">Prompt estimate plus output estimate; 0 = unknown (any request at all).</param>
/// <param name="Output">The output part of <paramref name="Total"/>; 0 when not known.</param>
internal readonly record struct TokenNeed(long Total, long Output)
{
    /// <summary>The prompt part: what an input-token limit must cover.</summary>
    public long Prompt => Math.Max(0, Total - Output);

    /// <summary>A total whose split is not known (admin checks, tests): every part of a split limit is asked for
    /// the whole total on the input side and one token on the output side.</summary>
    public static implicit operator TokenNeed(long total) => new(total, 0);
}
