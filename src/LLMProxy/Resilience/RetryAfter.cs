using System.Globalization;
using System.Net.Http.Headers;

namespace LLMProxy.Resilience;

/// <summary>
/// Reads how long an upstream that answered 429 wants us to wait, and turns that hint into a cool-down (SPEC §5).
/// Runs only on the 429 path, so it favours tolerance over speed: every header value is parsed by hand from the
/// non-validated header store (no exceptions, no validation side effects).
/// </summary>
internal static class RetryAfter
{
    /// <summary>Cool-down used when the upstream gives no usable hint.</summary>
    public static readonly TimeSpan DefaultCoolDown = TimeSpan.FromSeconds(5);

    /// <summary>Shortest cool-down, so a "retry now" hint still sheds a burst.</summary>
    public static readonly TimeSpan MinCoolDown = TimeSpan.FromMilliseconds(100);

    /// <summary>Longest cool-down, so a wrong or hostile hint cannot take an account out for long.</summary>
    public static readonly TimeSpan MaxCoolDown = TimeSpan.FromMinutes(5);

    /// <summary>
    /// The largest wait hinted by any of: <c>Retry-After</c> (delta seconds or HTTP-date), <c>retry-after-ms</c>,
    /// <c>x-ratelimit-reset-requests</c> / <c>x-ratelimit-reset-tokens</c> (Go durations such as "1s", "6m0s", "20ms",
    /// "1.5s"), <c>anthropic-ratelimit-requests-reset</c> (RFC 3339 date). Dates in the past count as zero;
    /// unparseable or negative values are ignored. Null when no header gave a usable value.
    /// </summary>
    public static TimeSpan? Parse(HttpResponseHeaders headers, DateTimeOffset now)
    {
        ArgumentNullException.ThrowIfNull(headers);
        TimeSpan? best = null;
        HttpHeadersNonValidated raw = headers.NonValidated;

        if (raw.TryGetValues("Retry-After", out HeaderStringValues values))
        {
            foreach (string v in values)
            {
                Max(ref best, ParseRetryAfterValue(v, now));
            }
        }

        if (raw.TryGetValues("retry-after-ms", out values))
        {
            foreach (string v in values)
            {
                Max(ref best, TryParseNumber(v, out double ms) && ms >= 0 ? FromMilliseconds(ms) : (TimeSpan?)null);
            }
        }

        foreach (string name in (ReadOnlySpan<string>)["x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"])
        {
            if (raw.TryGetValues(name, out values))
            {
                foreach (string v in values)
                {
                    Max(ref best, ParseResetDuration(v));
                }
            }
        }

        if (raw.TryGetValues("anthropic-ratelimit-requests-reset", out values))
        {
            foreach (string v in values)
            {
                Max(ref best, TryParseDate(v, out DateTimeOffset at) ? Until(at, now) : null);
            }
        }

        return best;
    }

    /// <summary>The cool-down for a hint: <see cref="DefaultCoolDown"/> (5 s) when null, clamped to [100 ms, 5 min].</summary>
    public static TimeSpan CoolDownFor(TimeSpan? hint)
    {
        TimeSpan d = hint ?? DefaultCoolDown;
        return d < MinCoolDown ? MinCoolDown : d > MaxCoolDown ? MaxCoolDown : d;
    }

    /// <summary><c>Retry-After</c>: delta-seconds (decimals tolerated) or an HTTP-date.</summary>
    internal static TimeSpan? ParseRetryAfterValue(string value, DateTimeOffset now)
    {
        if (TryParseNumber(value, out double seconds))
        {
            return seconds >= 0 ? FromSeconds(seconds) : null;
        }

        return TryParseDate(value, out DateTimeOffset at) ? Until(at, now) : null;
    }

    /// <summary>A Go duration ("1h2m3.5s", "20ms", "100us", "0"), or a bare number of seconds as some providers send.</summary>
    internal static TimeSpan? ParseResetDuration(string value)
    {
        ReadOnlySpan<char> s = value.AsSpan().Trim();
        if (TryParseNumber(s, out double seconds))
        {
            return seconds >= 0 ? FromSeconds(seconds) : null;
        }

        return TryParseGoDuration(s, out TimeSpan d) ? d : null;
    }

    internal static bool TryParseGoDuration(ReadOnlySpan<char> s, out TimeSpan result)
    {
        result = default;
        if (s.IsEmpty || s[0] == '-')
        {
            return false; // negative waits are meaningless
        }

        if (s[0] == '+')
        {
            s = s[1..];
        }

        double totalMs = 0;
        bool any = false;
        while (!s.IsEmpty)
        {
            int numLen = 0;
            while (numLen < s.Length && (char.IsAsciiDigit(s[numLen]) || s[numLen] == '.'))
            {
                numLen++;
            }

            if (numLen == 0 || !double.TryParse(s[..numLen], NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out double n))
            {
                return false;
            }

            s = s[numLen..];
            int unitLen = 0;
            while (unitLen < s.Length && !char.IsAsciiDigit(s[unitLen]) && s[unitLen] != '.')
            {
                unitLen++;
            }

            double msPerUnit;
            switch (s[..unitLen])
            {
                case "h": msPerUnit = 3_600_000; break;
                case "m": msPerUnit = 60_000; break;
                case "s": msPerUnit = 1_000; break;
                case "ms": msPerUnit = 1; break;
                case "us" or "\u00b5s" or "\u03bcs": msPerUnit = 1e-3; break;
                case "ns": msPerUnit = 1e-6; break;
                case "" when !any && unitLen == s.Length && n == 0: msPerUnit = 0; break; // Go accepts a lone "0"
                default: return false;
            }

            totalMs += n * msPerUnit;
            any = true;
            s = s[unitLen..];
        }

        if (!any || double.IsNaN(totalMs) || totalMs > TimeSpan.MaxValue.TotalMilliseconds)
        {
            return false;
        }

        result = FromMilliseconds(totalMs);
        return true;
    }

    private static bool TryParseNumber(ReadOnlySpan<char> s, out double value) =>
        double.TryParse(s.Trim(), NumberStyles.AllowLeadingSign | NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out value)
        && double.IsFinite(value);

    internal static bool TryParseDate(string value, out DateTimeOffset at)
    {
        ReadOnlySpan<char> s = value.AsSpan().Trim();
        // RFC 1123 ("r") first: the form HTTP dates use; then ISO/RFC 3339 and the obsolete HTTP forms via the general parser.
        return DateTimeOffset.TryParseExact(s, "r", CultureInfo.InvariantCulture, DateTimeStyles.AdjustToUniversal, out at)
            || DateTimeOffset.TryParse(s, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal | DateTimeStyles.AdjustToUniversal, out at);
    }

    private static TimeSpan Until(DateTimeOffset at, DateTimeOffset now) => at > now ? at - now : TimeSpan.Zero;

    private static TimeSpan FromSeconds(double seconds) => FromMilliseconds(seconds * 1000);

    private static TimeSpan FromMilliseconds(double ms) =>
        ms >= TimeSpan.MaxValue.TotalMilliseconds ? TimeSpan.MaxValue : TimeSpan.FromTicks((long)Math.Round(ms * TimeSpan.TicksPerMillisecond));

    private static void Max(ref TimeSpan? best, TimeSpan? candidate)
    {
        if (candidate is { } c && (best is null || c > best.Value))
        {
            best = c;
        }
    }
}
