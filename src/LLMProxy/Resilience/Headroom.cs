using System.Globalization;
using System.Net.Http.Headers;
using LLMProxy.RateLimiting;

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
/// header cannot take a key out for long. Anthropic limits input and output tokens apart (and admits a request by its
/// <c>max_tokens</c>): those two are kept as <see cref="InputTokens"/> and <see cref="OutputTokens"/> and asked for the
/// request's prompt and output estimates, so a key whose output tokens run low still takes a long prompt with a short
/// answer; the single token count (OpenAI's, Anthropic's combined <c>tokens</c>) is asked for the whole estimate.
/// </summary>
internal sealed record Headroom(long? RemainingRequests, DateTimeOffset? RequestsReset, long? RemainingTokens, DateTimeOffset? TokensReset,
    long? RequestsLimit = null, long? TokensLimit = null, DateTimeOffset LearnedAt = default,
    Headroom.Pool? InputTokens = null, Headroom.Pool? OutputTokens = null)
{
    /// <summary>One limit the provider reported: what remains, when it is whole again, and the limit if it said.</summary>
    public readonly record struct Pool(long Remaining, DateTimeOffset Reset, long? Limit);

    /// <summary>What went out since the provider said so (its numbers do not count it yet): requests, estimated tokens,
    /// and the output part of those tokens.</summary>
    public readonly record struct Sent(long Requests, long Tokens, long OutputTokens)
    {
        public long PromptTokens => Math.Max(0, Tokens - OutputTokens);
    }

    /// <summary>Furthest reset believed; a later one is cut to this.</summary>
    public static readonly TimeSpan MaxReset = RetryAfter.MaxCoolDown;

    /// <summary>Largest remaining count believed (10^15); a larger value is ignored.</summary>
    public const long MaxRemaining = 1_000_000_000_000_000;

    /// <summary>Whether this headroom says a request of <paramref name="tokens"/> estimated tokens cannot be sent at
    /// <paramref name="now"/>: no requests left, or fewer tokens left than it needs (of each kind the provider limits),
    /// before the matching reset — after what was <paramref name="sent"/> since the provider said so.</summary>
    public bool Blocks(TokenNeed tokens, DateTimeOffset now, Sent sent = default) => BlockedUntil(tokens, now, sent) is not null;

    /// <summary>When a block by <see cref="Blocks"/> ends (null when it does not block): the latest of the limits that
    /// cannot cover the request.</summary>
    public DateTimeOffset? BlockedUntil(TokenNeed tokens, DateTimeOffset now, Sent sent = default)
    {
        var at = Until(RemainingRequests, RequestsReset, RequestsLimit, 1, sent.Requests, now);
        Later(ref at, Until(RemainingTokens, TokensReset, TokensLimit, Math.Max(1, tokens.Total), sent.Tokens, now));
        if (InputTokens is { } input)
        {
            Later(ref at, Until(input.Remaining, input.Reset, input.Limit, Math.Max(1, tokens.Prompt), sent.PromptTokens, now));
        }
        if (OutputTokens is { } output)
        {
            Later(ref at, Until(output.Remaining, output.Reset, output.Limit, Math.Max(1, tokens.Output), sent.OutputTokens, now));
        }
        return at;
    }

    /// <summary>LLM tokens the provider said remain, less what was <paramref name="sent"/> since, in the tightest of its
    /// token limits whose reset is still ahead (<c>least_loaded</c>'s tie-break, SPEC §13.3); null when none holds.</summary>
    public long? TokensLeft(DateTimeOffset now, Sent sent = default)
    {
        long? left = null;
        Least(ref left, RemainingTokens, TokensReset, sent.Tokens, now);
        Least(ref left, InputTokens?.Remaining, InputTokens?.Reset, sent.PromptTokens, now);
        Least(ref left, OutputTokens?.Remaining, OutputTokens?.Reset, sent.OutputTokens, now);
        return left;
    }

    private static void Least(ref long? left, long? remaining, DateTimeOffset? reset, long sent, DateTimeOffset now)
    {
        if (remaining is { } r && reset > now && Math.Max(0, r - sent) is var have && (left is null || have < left))
        {
            left = have;
        }
    }

    /// <summary>Whether a request of <paramref name="tokens"/> needs more than a whole limit the provider announced
    /// (requests aside): it cannot pass on this key at any time, so a 429 for it is about the request, not the key.</summary>
    public bool Exceeds(TokenNeed tokens) =>
        TokensLimit is { } limit && tokens.Total > limit
        || InputTokens?.Limit is { } input && tokens.Prompt > input
        || OutputTokens?.Limit is { } output && tokens.Output > output;

    private static void Later(ref DateTimeOffset? at, DateTimeOffset? other)
    {
        if (other is { } o && (at is null || o > at))
        {
            at = o;
        }
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
    /// <c>anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{remaining,reset}</c> (RFC 3339). Anthropic's
    /// input and output tokens are kept apart; its combined <c>tokens</c> is the single token count (the lower when an
    /// answer also carries OpenAI's). Null when no usable pair is present.
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
        if (Pair(raw, "anthropic-ratelimit-tokens-remaining", "anthropic-ratelimit-tokens-reset", now, duration: false) is { } at
            && (tokens is null || at.Remaining < tokens))
        {
            (tokens, tokensReset, tokensLimit) = (at.Remaining, at.Reset, Limit(raw, "anthropic-ratelimit-tokens-limit"));
        }
        var input = AnthropicPool(raw, "anthropic-ratelimit-input-tokens-remaining", "anthropic-ratelimit-input-tokens-reset",
            "anthropic-ratelimit-input-tokens-limit", now);
        var output = AnthropicPool(raw, "anthropic-ratelimit-output-tokens-remaining", "anthropic-ratelimit-output-tokens-reset",
            "anthropic-ratelimit-output-tokens-limit", now);
        return requests is null && tokens is null && input is null && output is null ? null
            : new Headroom(requests, requestsReset, tokens, tokensReset, requestsLimit, tokensLimit, now, input, output);
    }

    private static Pool? AnthropicPool(HttpHeadersNonValidated raw, string remainingName, string resetName, string limitName,
        DateTimeOffset now) =>
        Pair(raw, remainingName, resetName, now, duration: false) is { } pair ? new Pool(pair.Remaining, pair.Reset, Limit(raw, limitName)) : null;

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
