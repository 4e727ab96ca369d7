using System.Buffers;
using System.Collections.Concurrent;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Primitives;

namespace LLMProxy.Mock;

/// <summary>
/// Per-API-key rate limits enforced like a provider (<see cref="MockOptions.TokensPerMinute"/>,
/// <see cref="MockOptions.RequestsPerMinute"/>): one token bucket per limit and key, holding a minute's worth and
/// refilling continuously, which is how OpenAI and Anthropic describe theirs. A completion is charged the usage it
/// reports (the mock knows it before answering, so it is taken at admission: no settling); one that does not fit
/// is answered 429 with the provider's body. The key is the request's <c>Authorization</c>, <c>x-api-key</c> or
/// <c>api-key</c> value, kept only as a SHA-256 hash.
/// </summary>
internal sealed class MockLimits
{
    /// <summary>Distinct keys tracked; further keys share one bucket, so a client inventing keys cannot grow memory.</summary>
    internal const int MaxKeys = 10_000;

    private static readonly string[] KeyHeaders = ["Authorization", "x-api-key", "api-key"];
    private static readonly UInt128 OverflowKey = UInt128.MaxValue;

    private readonly MockOptions _options;
    private readonly TimeProvider _time;
    private readonly ConcurrentDictionary<UInt128, KeyState> _keys = new();
    private volatile bool _full;
    private long _rateLimited;
    private long _tokensCharged;

    public MockLimits(MockOptions options)
    {
        _options = options;
        _time = options.TimeProvider;
    }

    public bool Enabled => _options.TokensPerMinute > 0 || _options.RequestsPerMinute > 0;

    /// <summary>Completions answered 429 because their key was out of its limits.</summary>
    public long RateLimited => Interlocked.Read(ref _rateLimited);

    /// <summary>Tokens charged to keys (the usage of every completion let through).</summary>
    public long TokensCharged => Interlocked.Read(ref _tokensCharged);

    /// <summary>Charges one request of <paramref name="tokens"/> to the request's key when it fits; the verdict carries
    /// what the provider's headers say either way.</summary>
    public Verdict Take(IHeaderDictionary headers, long tokens)
    {
        var state = StateFor(KeyOf(headers));
        long now = _time.GetTimestamp();
        lock (state)
        {
            state.Requests?.Refill(now, _time);
            state.Tokens?.Refill(now, _time);
            // A request larger than the whole bucket waits for a full one and leaves the key in debt, rather than never fitting.
            TimeSpan? requestsWait = state.Requests?.WaitFor(1);
            TimeSpan? tokensWait = state.Tokens?.WaitFor(Math.Min(tokens, state.Tokens.Capacity));
            bool allowed = requestsWait is not { Ticks: > 0 } && tokensWait is not { Ticks: > 0 };
            if (allowed)
            {
                state.Requests?.Take(1);
                state.Tokens?.Take(tokens);
                Interlocked.Add(ref _tokensCharged, tokens);
            }
            else
            {
                Interlocked.Increment(ref _rateLimited);
            }
            var wait = Max(requestsWait, tokensWait);
            return new Verdict(allowed, tokensWait is { Ticks: > 0 } ? "tokens" : "requests", tokens,
                state.Requests?.Snapshot(), state.Tokens?.Snapshot(), wait);
        }
    }

    private static TimeSpan Max(TimeSpan? a, TimeSpan? b) =>
        TimeSpan.FromTicks(Math.Max(a?.Ticks ?? 0, b?.Ticks ?? 0));

    private KeyState StateFor(UInt128 key)
    {
        if (_keys.TryGetValue(key, out var state))
            return state;
        // Keys are never removed, so once full stays full: ConcurrentDictionary.Count takes every bucket lock, and a
        // client inventing a key per request would otherwise take them all on every request.
        if (_full || (_full = _keys.Count >= MaxKeys))
            key = OverflowKey;
        return _keys.GetOrAdd(key, static (_, self) => self.NewState(), this);
    }

    private KeyState NewState()
    {
        long now = _time.GetTimestamp();
        return new KeyState(
            _options.RequestsPerMinute > 0 ? new Bucket(_options.RequestsPerMinute, now) : null,
            _options.TokensPerMinute > 0 ? new Bucket(_options.TokensPerMinute, now) : null);
    }

    /// <summary>SHA-256 of the first credential header present (empty for none): the key itself is never kept.</summary>
    internal static UInt128 KeyOf(IHeaderDictionary headers)
    {
        string value = "";
        foreach (var name in KeyHeaders)
        {
            if (headers.TryGetValue(name, out var raw) && !StringValues.IsNullOrEmpty(raw))
            {
                value = raw.ToString();
                break;
            }
        }
        Span<byte> hash = stackalloc byte[SHA256.HashSizeInBytes];
        SHA256.HashData(Encoding.UTF8.GetBytes(value), hash);
        var key = System.Buffers.Binary.BinaryPrimitives.ReadUInt128LittleEndian(hash);
        return key == OverflowKey ? key - 1 : key;
    }

    /// <summary>Writes the provider's rate-limit headers for a verdict: OpenAI <c>x-ratelimit-{limit,remaining,reset}-{requests,tokens}</c>
    /// (reset as a Go duration) or, for Anthropic, <c>anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}</c> (RFC 3339);
    /// plus <c>retry-after</c> on a refusal. Headers scripted by <see cref="MockHeaders.RatelimitPrefix"/> win.</summary>
    public void WriteHeaders(IHeaderDictionary response, Verdict verdict, bool anthropic)
    {
        if (!verdict.Allowed)
        {
            // Whole seconds, rounded up: a client that waits this long finds the tokens there.
            response.RetryAfter = ((long)Math.Ceiling(Math.Max(verdict.Wait.TotalSeconds, 1))).ToString(CultureInfo.InvariantCulture);
        }
        if (!_options.RateLimitHeaders)
            return;
        Write(response, "requests", verdict.Requests, anthropic);
        Write(response, "tokens", verdict.Tokens, anthropic);
    }

    private void Write(IHeaderDictionary response, string what, BucketSnapshot? bucket, bool anthropic)
    {
        if (bucket is not { } b)
            return;
        string limit = b.Limit.ToString(CultureInfo.InvariantCulture);
        string remaining = b.Remaining.ToString(CultureInfo.InvariantCulture);
        if (anthropic)
        {
            // Anthropic: when the bucket is full again, as a time.
            string reset = _time.GetUtcNow().Add(b.UntilFull).ToString("yyyy-MM-dd'T'HH:mm:ss.fff'Z'", CultureInfo.InvariantCulture);
            response.TryAdd($"anthropic-ratelimit-{what}-limit", limit);
            response.TryAdd($"anthropic-ratelimit-{what}-remaining", remaining);
            response.TryAdd($"anthropic-ratelimit-{what}-reset", reset);
            return;
        }
        response.TryAdd($"x-ratelimit-limit-{what}", limit);
        response.TryAdd($"x-ratelimit-remaining-{what}", remaining);
        response.TryAdd($"x-ratelimit-reset-{what}", FormatDuration(b.UntilFull));
    }

    /// <summary>The body of a refusal: OpenAI's <c>rate_limit_exceeded</c> error, or Anthropic's <c>rate_limit_error</c>.</summary>
    public byte[] ErrorBody(Verdict verdict, bool anthropic)
    {
        var bucket = verdict.Kind == "tokens" ? verdict.Tokens : verdict.Requests;
        long limit = bucket?.Limit ?? 0;
        string perMin = verdict.Kind == "tokens" ? "tokens per min (TPM)" : "requests per min (RPM)";
        string requested = verdict.Kind == "tokens" ? verdict.RequestedTokens.ToString(CultureInfo.InvariantCulture) : "1";
        string message = $"Rate limit reached for {_options.Name} on {perMin}: Limit {limit}, Remaining {bucket?.Remaining ?? 0}, " +
            $"Requested {requested}. Please try again in {FormatDuration(verdict.Wait)}.";
        var buffer = new ArrayBufferWriter<byte>(320);
        using (var w = new Utf8JsonWriter(buffer, MockPayloads.RelaxedJson))
        {
            w.WriteStartObject();
            if (anthropic)
            {
                w.WriteString("type", "error");
                w.WriteStartObject("error");
                w.WriteString("type", "rate_limit_error");
                w.WriteString("message", message);
            }
            else
            {
                w.WriteStartObject("error");
                w.WriteString("message", message);
                w.WriteString("type", verdict.Kind);
                w.WriteNull("param");
                w.WriteString("code", "rate_limit_exceeded");
            }
            w.WriteEndObject();
            w.WriteEndObject();
        }
        return buffer.WrittenSpan.ToArray();
    }

    /// <summary>A duration as OpenAI writes it: <c>20ms</c>, <c>1.5s</c>, <c>6m0s</c>; rounded up to the millisecond.</summary>
    internal static string FormatDuration(TimeSpan value)
    {
        long ms = (long)Math.Ceiling(Math.Max(0, value.TotalMilliseconds));
        if (ms == 0)
            return "0s";
        if (ms < 1000)
            return ms.ToString(CultureInfo.InvariantCulture) + "ms";
        long minutes = ms / 60_000;
        string seconds = ((ms % 60_000) / 1000.0).ToString("0.###", CultureInfo.InvariantCulture) + "s";
        return minutes > 0 ? minutes.ToString(CultureInfo.InvariantCulture) + "m" + seconds : seconds;
    }

    /// <summary>What one request was told.</summary>
    internal readonly record struct Verdict(bool Allowed, string Kind, long RequestedTokens, BucketSnapshot? Requests,
        BucketSnapshot? Tokens, TimeSpan Wait);

    internal readonly record struct BucketSnapshot(long Limit, long Remaining, TimeSpan UntilFull);

    private sealed record KeyState(Bucket? Requests, Bucket? Tokens);

    /// <summary>A minute's worth of capacity refilling continuously; may go below zero after an oversized request.
    /// Guarded by its key's lock.</summary>
    private sealed class Bucket(long capacity, long now)
    {
        private readonly double _perSecond = capacity / 60.0;
        private double _level = capacity;
        private long _at = now;

        public long Capacity => capacity;

        public void Refill(long now, TimeProvider time)
        {
            if (now <= _at)
                return;
            _level = Math.Min(capacity, _level + time.GetElapsedTime(_at, now).TotalSeconds * _perSecond);
            _at = now;
        }

        /// <summary>How long until <paramref name="amount"/> is there (zero when it is).</summary>
        public TimeSpan WaitFor(long amount) =>
            _level >= amount ? TimeSpan.Zero : TimeSpan.FromSeconds((amount - _level) / _perSecond);

        public void Take(long amount) => _level -= amount;

        public BucketSnapshot Snapshot() =>
            new(capacity, (long)Math.Max(0, Math.Floor(_level)), TimeSpan.FromSeconds((capacity - _level) / _perSecond));
    }
}
