using System.Net;
using LLMProxy.LoadBalancing;

namespace LLMProxy.Tests.LoadBalancing;

public class ClientHashTests
{
    [Fact]
    public void Of_SameAddress_SameHashAcrossInstances() =>
        Assert.Equal(ClientHash.Of(IPAddress.Parse("203.0.113.7")), ClientHash.Of(IPAddress.Parse("203.0.113.7")));

    [Fact]
    public void Of_KnownAddress_IsStableAcrossProcesses()
    {
        // Pinned value: a change here would reshuffle every iphash client on upgrade.
        ulong expected = StableHash.Mix64(StableHash.Fnv1a([192, 0, 2, 1]));
        Assert.Equal(expected, ClientHash.Of(IPAddress.Parse("192.0.2.1")));
        Assert.Equal(0xCBF29CE484222325UL, StableHash.Fnv1a([]));
        Assert.Equal(0xAF63DC4C8601EC8CUL, StableHash.Fnv1a("a"u8));
    }

    [Fact]
    public void Of_IPv4MappedIPv6_EqualsIPv4()
    {
        IPAddress v4 = IPAddress.Parse("198.51.100.23");
        Assert.Equal(ClientHash.Of(v4), ClientHash.Of(v4.MapToIPv6()));
    }

    [Fact]
    public void Of_DistinctAddresses_NoCollisionsInASample()
    {
        var seen = new HashSet<ulong>();
        for (int i = 0; i < 50_000; i++)
        {
            Assert.True(seen.Add(ClientHash.Of(new IPAddress(new byte[] { 172, 16, (byte)(i >> 8), (byte)i }))));
        }

        Assert.NotEqual(ClientHash.Of(IPAddress.IPv6Loopback), ClientHash.Of(IPAddress.Loopback));
    }

    [Fact]
    public void OfString_SameName_SameHash() =>
        Assert.Equal(StableHash.OfString("openai-1"), StableHash.OfString(new string("openai-1".ToCharArray())));
}
