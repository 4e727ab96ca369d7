using System.Net;
using System.Net.Sockets;

namespace LLMProxy.RateLimiting;

/// <summary>
/// Decides which IP a request belongs to (SPEC §3.2): the TCP peer, unless the peer is a trusted proxy
/// (<c>trustedProxies</c>, ext), in which case <c>X-Forwarded-For</c> is walked right to left — each entry was appended by
/// the hop to its right — skipping trusted hops. The first untrusted valid address is the client. If the walk meets an
/// invalid entry or runs out of entries, the client is the last (left-most) trusted hop reached, because nothing further
/// left was vouched for by a trusted proxy (this is what ASP.NET's ForwardedHeadersMiddleware does too); with no
/// usable entry at all it is the peer. An untrusted peer's header is ignored entirely, so a spoofed XFF can neither move
/// a client to another rate-limit bucket nor to another hash slot. Results are normalized: IPv4-mapped IPv6 → IPv4.
/// </summary>
internal sealed class ClientIpResolver
{
    private readonly IPNetwork[] _trusted;

    /// <param name="trustedProxyCidrs">CIDRs or single addresses, e.g. "10.0.0.0/8", "127.0.0.1", "::1/128".</param>
    /// <exception cref="ArgumentException">An entry is not a valid address or CIDR (config validation should catch it first; see <see cref="IsValidCidr"/>).</exception>
    public ClientIpResolver(IReadOnlyList<string> trustedProxyCidrs)
    {
        ArgumentNullException.ThrowIfNull(trustedProxyCidrs);
        _trusted = new IPNetwork[trustedProxyCidrs.Count];
        for (int i = 0; i < _trusted.Length; i++)
        {
            if (!TryParseNetwork(trustedProxyCidrs[i], out _trusted[i]))
            {
                throw new ArgumentException($"Not an IP address or CIDR: '{trustedProxyCidrs[i]}'.", nameof(trustedProxyCidrs));
            }
        }
    }

    /// <summary>Whether <paramref name="value"/> is accepted as a trusted-proxy entry (for config validation).</summary>
    public static bool IsValidCidr(string? value) => TryParseNetwork(value, out _);

    /// <summary>Whether <paramref name="address"/> falls in a trusted network.</summary>
    public bool IsTrusted(IPAddress address)
    {
        ArgumentNullException.ThrowIfNull(address);
        return IsTrustedNormalized(Normalize(address));
    }

    /// <param name="peer">The TCP peer address.</param>
    /// <param name="xForwardedFor">The X-Forwarded-For value; several header lines joined with "," (as StringValues.ToString does).</param>
    public IPAddress Resolve(IPAddress peer, string? xForwardedFor)
    {
        ArgumentNullException.ThrowIfNull(peer);
        IPAddress client = Normalize(peer);
        if (_trusted.Length == 0 || string.IsNullOrEmpty(xForwardedFor) || !IsTrustedNormalized(client))
        {
            return client;
        }

        ReadOnlySpan<char> rest = xForwardedFor;
        while (!rest.IsEmpty)
        {
            int comma = rest.LastIndexOf(',');
            ReadOnlySpan<char> entry = rest[(comma + 1)..].Trim();
            rest = comma < 0 ? [] : rest[..comma];
            if (entry.IsEmpty)
            {
                continue; // tolerate "a, , b" and a trailing comma
            }

            if (!TryParseEntry(entry, out IPAddress? hop))
            {
                break;
            }

            client = hop;
            if (!IsTrustedNormalized(hop))
            {
                break;
            }
        }

        return client;
    }

    private bool IsTrustedNormalized(IPAddress address)
    {
        foreach (IPNetwork network in _trusted)
        {
            if (network.Contains(address))
            {
                return true;
            }
        }

        return false;
    }

    private static IPAddress Normalize(IPAddress address) => address.IsIPv4MappedToIPv6 ? address.MapToIPv4() : address;

    /// <summary>An XFF entry: an address, optionally with a port ("1.2.3.4:5678", "[::1]:80"), optionally quoted.</summary>
    private static bool TryParseEntry(ReadOnlySpan<char> entry, out IPAddress address)
    {
        if (entry.Length >= 2 && entry[0] == '"' && entry[^1] == '"')
        {
            entry = entry[1..^1];
        }

        if (IPAddress.TryParse(entry, out IPAddress? parsed) || (IPEndPoint.TryParse(entry, out IPEndPoint? endPoint) && (parsed = endPoint.Address) is not null))
        {
            address = Normalize(parsed);
            return true;
        }

        address = IPAddress.None;
        return false;
    }

    private static bool TryParseNetwork(string? value, out IPNetwork network)
    {
        network = default;
        if (string.IsNullOrWhiteSpace(value))
        {
            return false;
        }

        ReadOnlySpan<char> s = value.AsSpan().Trim();
        if (s.Contains('/'))
        {
            if (!IPNetwork.TryParse(s, out network))
            {
                return false;
            }
        }
        else if (IPAddress.TryParse(s, out IPAddress? single))
        {
            network = new IPNetwork(single, single.AddressFamily == AddressFamily.InterNetwork ? 32 : 128);
        }
        else
        {
            return false;
        }

        // "::ffff:10.0.0.0/104" means the IPv4 network 10.0.0.0/8; addresses are matched in normalized (IPv4) form.
        if (network.BaseAddress.IsIPv4MappedToIPv6 && network.PrefixLength >= 96)
        {
            network = new IPNetwork(network.BaseAddress.MapToIPv4(), network.PrefixLength - 96);
        }

        return true;
    }
}
