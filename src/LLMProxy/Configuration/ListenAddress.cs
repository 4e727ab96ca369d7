using System.Net;

namespace LLMProxy.Configuration;

/// <summary>Listen-address rules: an IP literal or "localhost"; and when two listeners on one port collide.</summary>
internal static class ListenAddress
{
    public static bool IsValid(string address) => address.Equals("localhost", StringComparison.OrdinalIgnoreCase) || TryParse(address, out _);

    /// <summary>Two listeners on the same port clash unless both name different, specific addresses.
    /// A wildcard (0.0.0.0 / ::) overlaps everything; localhost means 127.0.0.1 and ::1.</summary>
    public static bool Overlaps(string a, string b)
    {
        var left = Expand(a);
        var right = Expand(b);
        if (left.Any(IsWildcard) || right.Any(IsWildcard)) return true;
        return left.Intersect(right).Any();
    }

    private static bool TryParse(string text, out IPAddress address)
    {
        address = IPAddress.None;
        // IPAddress.TryParse also accepts shorthand such as "1" or "10.1"; require the dotted quad for IPv4.
        if (!text.Contains(':', StringComparison.Ordinal) && text.Count(c => c == '.') != 3) return false;
        if (!IPAddress.TryParse(text, out var parsed)) return false;
        address = parsed;
        return true;
    }

    private static IPAddress[] Expand(string text) =>
        text.Equals("localhost", StringComparison.OrdinalIgnoreCase) ? [IPAddress.Loopback, IPAddress.IPv6Loopback]
        : TryParse(text, out var address) ? [address]
        : [];

    private static bool IsWildcard(IPAddress address) => address.Equals(IPAddress.Any) || address.Equals(IPAddress.IPv6Any);
}
