using System.Net;
using LLMProxy.RateLimiting;

namespace LLMProxy.Tests.RateLimiting;

public class ClientIpResolverTests
{
    private static readonly ClientIpResolver Resolver = new(["10.0.0.0/8", "127.0.0.1", "::1/128"]);

    private static string Resolve(string peer, string? xff) => Resolver.Resolve(IPAddress.Parse(peer), xff).ToString();

    [Fact]
    public void Resolve_UntrustedPeerWithoutXff_Peer() =>
        Assert.Equal("203.0.113.5", Resolve("203.0.113.5", null));

    [Fact]
    public void Resolve_UntrustedPeerWithSpoofedXff_XffIgnored() =>
        Assert.Equal("203.0.113.5", Resolve("203.0.113.5", "1.2.3.4, 10.0.0.1"));

    [Fact]
    public void Resolve_TrustedPeerSingleHop_XffClient() =>
        Assert.Equal("198.51.100.7", Resolve("10.1.2.3", "198.51.100.7"));

    [Fact]
    public void Resolve_TrustedPeerChain_SkipsTrustedHopsRightToLeft() =>
        Assert.Equal("198.51.100.7", Resolve("127.0.0.1", "198.51.100.7, 10.0.0.9, 10.0.0.8"));

    [Fact]
    public void Resolve_ClientPrependsFakeEntries_RightmostUntrustedWins() =>
        Assert.Equal("198.51.100.7", Resolve("10.0.0.1", "6.6.6.6, 10.0.0.2, 198.51.100.7"));

    [Fact]
    public void Resolve_TrustedPeerEmptyXff_Peer()
    {
        Assert.Equal("10.0.0.1", Resolve("10.0.0.1", ""));
        Assert.Equal("10.0.0.1", Resolve("10.0.0.1", " , "));
    }

    [Fact]
    public void Resolve_AllEntriesTrusted_LeftmostTrustedHop() =>
        Assert.Equal("10.0.0.5", Resolve("10.0.0.1", "10.0.0.5, 10.0.0.2"));

    [Fact]
    public void Resolve_InvalidEntry_StopsAtLastTrustedHop()
    {
        Assert.Equal("10.0.0.2", Resolve("10.0.0.1", "1.2.3.4, unknown, 10.0.0.2"));
        Assert.Equal("10.0.0.1", Resolve("10.0.0.1", "garbage"));
    }

    [Fact]
    public void Resolve_EntriesWithPortsAndQuotes_Parsed()
    {
        Assert.Equal("198.51.100.7", Resolve("10.0.0.1", "198.51.100.7:51234"));
        Assert.Equal("2001:db8::1", Resolve("10.0.0.1", "[2001:db8::1]:443"));
        Assert.Equal("2001:db8::2", Resolve("10.0.0.1", "\"2001:db8::2\""));
    }

    [Fact]
    public void Resolve_IPv6LoopbackPeerTrusted_UsesXff() =>
        Assert.Equal("2001:db8::5", Resolve("::1", "2001:db8::5"));

    [Fact]
    public void Resolve_IPv4MappedPeer_NormalizedAndMatchedAgainstIPv4Cidr()
    {
        Assert.Equal("198.51.100.7", Resolve("::ffff:10.0.0.1", "198.51.100.7"));
        Assert.Equal("203.0.113.5", Resolve("::ffff:203.0.113.5", "1.2.3.4"));
    }

    [Fact]
    public void Resolve_IPv4MappedXffEntry_Normalized() =>
        Assert.Equal("198.51.100.7", Resolve("10.0.0.1", "::ffff:198.51.100.7"));

    [Fact]
    public void Resolve_NoTrustedProxies_AlwaysPeer()
    {
        var resolver = new ClientIpResolver([]);
        Assert.Equal(IPAddress.Parse("127.0.0.1"), resolver.Resolve(IPAddress.Loopback, "1.2.3.4"));
        Assert.Equal(IPAddress.Parse("192.0.2.1"), resolver.Resolve(IPAddress.Parse("::ffff:192.0.2.1"), null));
    }

    [Fact]
    public void Resolve_SingleAddressTrust_ExactMatchOnly()
    {
        Assert.Equal("198.51.100.7", Resolve("127.0.0.1", "198.51.100.7"));
        Assert.Equal("127.0.0.2", Resolve("127.0.0.2", "198.51.100.7"));
    }

    [Fact]
    public void Resolve_MappedCidrInConfig_TrustsIPv4Peers()
    {
        var resolver = new ClientIpResolver(["::ffff:192.168.0.0/112"]);
        Assert.Equal(IPAddress.Parse("198.51.100.7"), resolver.Resolve(IPAddress.Parse("192.168.3.4"), "198.51.100.7"));
    }

    [Theory]
    [InlineData("10.0.0.0/8", true)]
    [InlineData("127.0.0.1", true)]
    [InlineData("::1/128", true)]
    [InlineData("2001:db8::/32", true)]
    [InlineData(" 10.0.0.0/8 ", true)]
    [InlineData("10.0.0.0/33", false)]
    [InlineData("not-an-ip", false)]
    [InlineData("", false)]
    [InlineData(null, false)]
    public void IsValidCidr_Forms(string? value, bool valid) => Assert.Equal(valid, ClientIpResolver.IsValidCidr(value));

    [Fact]
    public void Resolve_CidrWithHostBits_MaskedToItsNetwork()
    {
        var resolver = new ClientIpResolver(["10.1.2.3/8"]);
        Assert.True(resolver.IsTrusted(IPAddress.Parse("10.200.0.1")));
        Assert.False(resolver.IsTrusted(IPAddress.Parse("11.0.0.1")));
    }

    [Fact]
    public void Ctor_InvalidCidr_Throws() =>
        Assert.Throws<ArgumentException>(() => new ClientIpResolver(["10.0.0.0/8", "bogus"]));
}
