using System.Runtime.InteropServices;

namespace LLMProxy.LoadBalancing;

/// <summary>
/// Stable hashes for hashing decisions that must not change between processes (string.GetHashCode is randomized
/// per process). Hand-written because System.IO.Hashing is not referenced; FNV-1a plus the murmur3 fmix64 finalizer
/// is plenty for load spreading (this is not a security boundary).
/// </summary>
internal static class StableHash
{
    private const ulong FnvOffset = 14695981039346656037UL;
    private const ulong FnvPrime = 1099511628211UL;

    public static ulong Fnv1a(ReadOnlySpan<byte> data)
    {
        ulong h = FnvOffset;
        foreach (byte b in data)
        {
            h = (h ^ b) * FnvPrime;
        }

        return h;
    }

    /// <summary>FNV-1a over the UTF-16 code units (little-endian bytes) of <paramref name="s"/>, then mixed.</summary>
    public static ulong OfString(string s)
    {
        ArgumentNullException.ThrowIfNull(s);
        ReadOnlySpan<byte> bytes = MemoryMarshal.AsBytes(s.AsSpan());
        if (!BitConverter.IsLittleEndian)
        {
            ulong h = FnvOffset;
            foreach (char c in s)
            {
                h = (h ^ (byte)c) * FnvPrime;
                h = (h ^ (byte)(c >> 8)) * FnvPrime;
            }

            return Mix64(h);
        }

        return Mix64(Fnv1a(bytes));
    }

    /// <summary>murmur3 fmix64: full avalanche, bijective.</summary>
    public static ulong Mix64(ulong x)
    {
        x ^= x >> 33;
        x *= 0xff51afd7ed558ccdUL;
        x ^= x >> 33;
        x *= 0xc4ceb9fe1a85ec53UL;
        x ^= x >> 33;
        return x;
    }
}
