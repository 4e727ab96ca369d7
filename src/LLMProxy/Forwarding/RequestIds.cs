using Microsoft.Extensions.Primitives;

namespace LLMProxy.Forwarding;

/// <summary>X-Request-ID: the client's when it sent a sane one, otherwise a new random one.</summary>
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

    public static string New() => Guid.NewGuid().ToString("N");

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
