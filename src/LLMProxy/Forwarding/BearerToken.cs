using Microsoft.Extensions.Primitives;

namespace LLMProxy.Forwarding;

/// <summary>
/// The one reading of <c>Authorization: Bearer &lt;token&gt;</c>, for client keys and the admin token alike (RFC 9110 §11.1
/// and RFC 6750 §2.1: the scheme case-insensitive, one or more spaces — not tabs — before the token, a single header).
/// </summary>
internal static class BearerToken
{
    private const string Scheme = "Bearer";

    /// <summary>The token; false for no header, several headers, another scheme, another separator or an empty token.</summary>
    public static bool TryParse(StringValues header, out ReadOnlySpan<char> token)
    {
        token = default;
        if (header.Count != 1)
        {
            return false;
        }
        var value = header[0].AsSpan().Trim();
        if (value.Length <= Scheme.Length || !value[..Scheme.Length].Equals(Scheme, StringComparison.OrdinalIgnoreCase) || value[Scheme.Length] != ' ')
        {
            return false;
        }
        token = value[Scheme.Length..].TrimStart(' ');
        return !token.IsEmpty;
    }
}
