using Microsoft.Extensions.Primitives;

namespace LLMProxy.Forwarding;

/// <summary>X-Request-ID: the client's when it sent a sane one (printable, at most 128 chars), otherwise a new one.</summary>
internal static class RequestIds
{
    private const int MaxLength = 128;

    public static string FromOrNew(StringValues incoming)
    {
        if (incoming.Count == 1 && incoming[0] is { Length: > 0 and <= MaxLength } id && IsPrintable(id))
        {
            return id;
        }
        return New();
    }

    // Process prefix (random at start) + a counter: unique for the process's life, and no random-number
    // syscall per request as Guid.NewGuid would cost.
    private static readonly string Prefix = Random.Shared.NextInt64().ToString("x16", System.Globalization.CultureInfo.InvariantCulture)[..10];
    private static long _counter;

    public static string New()
    {
        var n = Interlocked.Increment(ref _counter);
        return string.Create(Prefix.Length + 12, n, static (span, value) =>
        {
            Prefix.AsSpan().CopyTo(span);
            value.TryFormat(span[Prefix.Length..], out _, "x12", System.Globalization.CultureInfo.InvariantCulture);
        });
    }

    private static bool IsPrintable(string value)
    {
        foreach (var c in value)
        {
            if (c is < '!' or > '~')
            {
                return false;
            }
        }
        return true;
    }
}
