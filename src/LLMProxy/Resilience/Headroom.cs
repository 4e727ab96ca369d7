using System.Globalization;
using System.Net.Http.Headers;

namespace LLMProxy.Resilience;

/// <summary>
/// What a provider said about a key's remaining rate limits on its last answer (SPEC §13.1): remaining requests and
/// tokens, each with the moment it resets, and the limit when the provider sent it. A key whose learned remaining
/// cannot cover the next request is skipped — before the provider answers 429 — until it has regained enough: OpenAI's
/// reset is when the limit "resets to its initial state" and Anthropic's when it is "fully replenished", and both
/// refill continuously, so with the limit known the key regains (limit − remaining) evenly between the answer and the
/// reset; without it, the whole wait until the reset is assumed. Values are hostile input: negative, huge or
/// unparseable numbers, resets in the past or unparseable are ignored (a remaining without a usable future reset means
/// nothing), a limit not above the remaining is ignored, and resets are capped at <see cref="MaxReset"/> so a wrong
/// header cannot take a key out for long.
/// </summary>
internal sealed record Headroom(long? RemainingRequests, DateTimeOffset? RequestsReset, long? RemainingTokens, DateTimeOffset? TokensReset,
    long? RequestsLimit = null, long? TokensLimit = null, DateTimeOffset LearnedAt = default)
{
    /// <summary>Furthest reset believed; a later one is cut to this.</summary>
    public static readonly TimeSpan MaxReset = RetryAfter.MaxCoolDown;

    /// <summary>Largest remaining count believed (10^15); a larger value is ignored.</summary>
    public const long MaxRemaining = 1_000_000_000_000_000;

    // Header names built once: this runs on every answer.
    private static readonly (string Remaining, string Reset, string Limit)[] AnthropicTokenPairs =
        [.. new[] { "tokens", "input-tokens", "output-tokens" }.Select(k =>
            ($"anthropic-ratelimit-{k}-remaining", $"anthropic-ratelimit-{k}-reset", $"anthropic-ratelimit-{k}-limit"))];

    /// <summary>Whether this headroom says a request of <paramref name="tokens"/> estimated tokens cannot be sent at
    /// <paramref name="now"/>: no requests left, or fewer tokens left than it needs, before the matching reset —
    /// after <paramref name="requestsSent"/> requests and <paramref name="tokensSent"/> estimated tokens went out
    /// since the provider said so.</summary>
    public bool Blocks(long tokens, DateTimeOffset now, long requestsSent = 0, long tokensSent = 0) =>
        BlockedUntil(tokens, now, requestsSent, tokensSent) is not null;

    /// <summary>When a block by <see cref="Blocks"/> ends (null when it does not block).</summary>
    public DateTimeOffset? BlockedUntil(long tokens, DateTimeOffset now, long requestsSent = 0, long tokensSent = 0)
    {
        var requests = Until(RemainingRequests, RequestsReset, RequestsLimit, 1, requestsSent, now);
        var tokensAt = Until(RemainingTokens, TokensReset, TokensLimit, Math.Max(1, tokens), tokensSent, now);
        return tokensAt is { } t && (requests is null || t > requests) ? t : requests;
    }

    /// <summary>When <paramref name="need"/> is there again of what the provider said remains (less what went out since);
    /// null when it is there now or the numbers no longer hold.</summary>
    private DateTimeOffset? Until(long? remaining, DateTimeOffset? reset, long? limit, long need, long sent, DateTimeOffset now)
    {
        if (remaining is not { } r || reset is not { } end || end <= now)
        {
            return null;
        }
        long have = r - sent;
        if (have >= need)
        {
            return null;
        }
        if (limit is { } l && l > r && LearnedAt != default && end > LearnedAt)
        {
            // Refilled evenly: (l - r) over (end - LearnedAt). In doubles: our own counts of what went out may be huge.
            double ticks = ((double)need - have) * (end - LearnedAt).Ticks / (l - r);
            if (ticks < (end - LearnedAt).Ticks)
            {
                var at = LearnedAt + TimeSpan.FromTicks((long)Math.Ceiling(ticks));
                return at <= now ? null : at;
            }
        }
        return end;
    }

    /// <summary>
    /// Reads OpenAI <c>x-ratelimit-remaining-{requests,tokens}</c> / <c>x-ratelimit-reset-{requests,tokens}</c> (Go
    /// durations such as <c>6m0s</c>, <c>1.5s</c>, <c>20ms</c>) and Anthropic
    /// <c>anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{remaining,reset}</c> (RFC 3339). Of the
    /// Anthropic token kinds the one with the least remaining counts. Null when no usable pair is present.
    /// </summary>
    public static Headroom? Parse(HttpResponseHeaders headers, DateTimeOffset now)
    {
        ArgumentNullException.ThrowIfNull(headers);
        var raw = headers.NonValidated;
        if (!HasRateLimitHeaders(raw))
        {
            // Most answers (mocks, self-hosted servers) carry none: one pass over the names, no lookups.
            return null;
        }
        long? requests = null, tokens = null, requestsLimit = null, tokensLimit = null;
        DateTimeOffset? requestsReset = null, tokensReset = null;

        if (Pair(raw, "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests", now, duration: true) is { } r)
        {
            (requests, requestsReset, requestsLimit) = (r.Remaining, r.Reset, Limit(raw, "x-ratelimit-limit-requests"));
        }
        if (Pair(raw, "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens", now, duration: true) is { } t)
        {
            (tokens, tokensReset, tokensLimit) = (t.Remaining, t.Reset, Limit(raw, "x-ratelimit-limit-tokens"));
        }
        if (Pair(raw, "anthropic-ratelimit-requests-remaining", "anthropic-ratelimit-requests-reset", now, duration: false) is { } ar)
        {
            (requests, requestsReset, requestsLimit) = (ar.Remaining, ar.Reset, Limit(raw, "anthropic-ratelimit-requests-limit"));
        }
        foreach (var (remainingName, resetName, limitName) in AnthropicTokenPairs)
        {
            if (Pair(raw, remainingName, resetName, now, duration: false) is { } at
                && (tokens is null || at.Remaining < tokens))
            {
                (tokens, tokensReset, tokensLimit) = (at.Remaining, at.Reset, Limit(raw, limitName));
            }
        }
        return requests is null && tokens is null ? null
            : new Headroom(requests, requestsReset, tokens, tokensReset, requestsLimit, tokensLimit, now);
    }

    /// <summary>Whether an answer carries any provider rate-limit header (one pass over the names, no lookups).</summary>
    public static bool Announced(System.Net.Http.Headers.HttpResponseHeaders headers) => HasRateLimitHeaders(headers.NonValidated);

    private static bool HasRateLimitHeaders(HttpHeadersNonValidated raw)
    {
        foreach (var header in raw)
        {
            if (header.Key.StartsWith("x-ratelimit-", StringComparison.OrdinalIgnoreCase)
                || header.Key.StartsWith("anthropic-ratelimit-", StringComparison.OrdinalIgnoreCase))
            {
                return true;
            }
        }
        return false;
    }

    /// <summary>A limit header's value when it is one plausible number (else null: the whole wait until reset is assumed).</summary>
    private static long? Limit(HttpHeadersNonValidated raw, string name) =>
        raw.TryGetValues(name, out var values) && values.Count == 1
        && long.TryParse(values.ToString().AsSpan().Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out var limit)
        && limit is > 0 and <= MaxRemaining
            ? limit
            : null;

    private static (long Remaining, DateTimeOffset Reset)? Pair(HttpHeadersNonValidated raw, string remainingName, string resetName,
        DateTimeOffset now, bool duration)
    {
        if (!raw.TryGetValues(remainingName, out var remainingValues) || !raw.TryGetValues(resetName, out var resetValues)
            || remainingValues.Count != 1 || resetValues.Count != 1)
        {
            return null;
        }
        string remainingText = remainingValues.ToString(), resetText = resetValues.ToString();
        if (!long.TryParse(remainingText.AsSpan().Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out var remaining)
            || remaining > MaxRemaining)
        {
            return null;
        }
        DateTimeOffset reset;
        if (duration)
        {
            if (RetryAfter.ParseResetDuration(resetText) is not { } d || d <= TimeSpan.Zero)
            {
                return null;
            }
            reset = now + (d > MaxReset ? MaxReset : d);
        }
        else
        {
            if (!RetryAfter.TryParseDate(resetText, out var at) || at <= now)
            {
                return null;
            }
            reset = at - now > MaxReset ? now + MaxReset : at;
        }
        return (remaining, reset);
    }
}
