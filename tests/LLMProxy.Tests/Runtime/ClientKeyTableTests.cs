using System.Security.Cryptography;
using System.Text;
using LLMProxy.Configuration;
using LLMProxy.Forwarding.Stages;
using LLMProxy.Observability;
using LLMProxy.Runtime;
using LLMProxy.Tests.Infrastructure;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;

namespace LLMProxy.Tests.Runtime;

/// <summary>The compiled client keys of a forward (SPEC §15) and the stages they add.</summary>
public class ClientKeyTableTests
{
    private static ClientKeyConfig Key(string name, string key, bool bySha = false) => bySha
        ? new ClientKeyConfig { Name = name, Sha256 = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(key))) }
        : new ClientKeyConfig { Name = name, Key = key };

    private static ClientKeyTable Table(ClientKeyTable? previous = null, params ClientKeyConfig[] keys) =>
        new(keys, "fwd", new ProxyMetrics(includeProcessMetrics: false), new FakeTimeProvider(), previous);

    [Fact]
    public void Match_EachKeyByValueOrDigest_NothingElse()
    {
        var table = Table(null, Key("a", "aaaaaaaaaaaaaaaa-1"), Key("b", "bbbbbbbbbbbbbbbb-2", bySha: true), Key("c", "ключ-с-юникодом-3"));
        Assert.Equal("a", table.Match("aaaaaaaaaaaaaaaa-1")?.Name);
        Assert.Equal("b", table.Match("bbbbbbbbbbbbbbbb-2")?.Name);
        Assert.Equal("c", table.Match("ключ-с-юникодом-3")?.Name);   // hashed as UTF-8, as sha256 digests are written
        Assert.Null(table.Match("aaaaaaaaaaaaaaaa-"));
        Assert.Null(table.Match("aaaaaaaaaaaaaaaa-1 "));
        Assert.Null(table.Match(""));
        Assert.Null(table.Match(new string('a', ClientKeyConfig.MaxKeyLength + 1)));
        Assert.Null(table.Match(new string('\uD800', ClientKeyConfig.MaxKeyLength))); // lone surrogates: no crash
    }

    [Fact]
    public void ConnectionsLastKey_FormattedAnywhere_NamesTheKeyNeverShowsIt()
    {
        // What the authentication stage keeps in a connection's items: whatever formats those items (a debugger, a
        // diagnostic dump) must not print the client's key.
        const string secret = "sk-connection-item-secret-0123456789";
        var table = Table(null, Key("team", secret));
        var type = typeof(AuthenticateClientStage).GetNestedType("LastKey", System.Reflection.BindingFlags.NonPublic)!;
        var item = Activator.CreateInstance(type, table, secret, table.Keys[0])!;
        var text = item.ToString()!;
        Assert.DoesNotContain(secret, text);
        Assert.Contains("team", text);
    }

    [Fact]
    public void Reload_KeepsTheLimiterOfAnUnchangedKeyOnly()
    {
        var before = Table(null, Key("a", "aaaaaaaaaaaaaaaa-1"), Key("b", "bbbbbbbbbbbbbbbb-2"));
        var after = Table(before, Key("a", "aaaaaaaaaaaaaaaa-1"), Key("b", "bbbbbbbbbbbbbbbb-3"));
        Assert.Same(before.Keys[0].Limiter, after.Keys[0].Limiter);
        Assert.NotSame(before.Keys[1].Limiter, after.Keys[1].Limiter);
    }

    [Fact]
    public void Composer_ForwardWithKeys_AuthenticatesAfterAdmitAndAuthorizesAfterFacts_WithoutKeysNeither()
    {
        var upstream = "- name: u\n  url: \"http://127.0.0.1:1\"";
        var keyed = TestProxy.Config(upstream, "- name: u", forwardExtra: "ratelimit: { perSecond: 1 }\nkeys:\n  - name: a\n    key: \"aaaaaaaaaaaaaaaa-1\"");
        using var runtime = new ProxyRuntime(ConfigLoader.LoadYaml(keyed).Config!, new ProxyMetrics(includeProcessMetrics: false), new FakeTimeProvider(), NullLogger.Instance);
        Assert.Collection(runtime.Forwards[0].Stages,
            s => Assert.IsType<AdmitClientStage>(s),
            s => Assert.IsType<AuthenticateClientStage>(s),
            s => Assert.IsType<ScreenStage>(s),
            s => Assert.IsType<ReadBodyStage>(s),
            s => Assert.IsType<ReadFactsStage>(s),
            s => Assert.IsType<AuthorizeClientStage>(s),
            s => Assert.IsType<AttemptStage>(s));
        Assert.False(runtime.Forwards[0].NeedsFacts); // no models, no tokensPerMinute: nothing to read the body for

        var open = TestProxy.Config(upstream, "- name: u");
        using var plain = new ProxyRuntime(ConfigLoader.LoadYaml(open).Config!, new ProxyMetrics(includeProcessMetrics: false), new FakeTimeProvider(), NullLogger.Instance);
        Assert.DoesNotContain(plain.Forwards[0].Stages, s => s is AuthenticateClientStage or AuthorizeClientStage);
        Assert.Null(plain.Forwards[0].ClientKeys);
    }
}
