using System.Net;

namespace LLMProxy.LoadBalancing;

/// <summary>Stable (process-independent, non-randomized) 64-bit hash of a client IP for <c>iphash</c>.</summary>
internal static class ClientHash
{
    /// <summary>
    /// FNV-1a over the address bytes, finished with a 64-bit avalanche mix. An IPv4-mapped IPv6 address hashes as its
    /// IPv4 form so a dual-stack listener does not split one client across two hash slots. Allocation-free.
    /// </summary>
    public static ulong Of(IPAddress ip)
    {
        ArgumentNullException.ThrowIfNull(ip);
        Span<byte> bytes = stackalloc byte[16];
        if (!ip.TryWriteBytes(bytes, out int written))
        {
            return 0; // unreachable: 16 bytes hold any IP address
        }

        ReadOnlySpan<byte> span = bytes[..written];
        if (written == 16 && ip.IsIPv4MappedToIPv6)
        {
            span = span[12..];
        }

        return StableHash.Mix64(StableHash.Fnv1a(span));
    }
}
