using System.Net;
using LLMProxy.Configuration;
using LLMProxy.Observability;
using LLMProxy.Runtime;
using LLMProxy.Tests.Infrastructure;
using Microsoft.Extensions.Logging.Abstractions;

namespace LLMProxy.Tests.Runtime;

/// <summary>What a runtime built with <c>previous</c> (a reload) takes over, and who owns it afterwards.</summary>
public class ProxyRuntimeReloadTests
{
    private static readonly ProxyMetrics Metrics = new(includeProcessMetrics: false);

    private static ProxyRuntime Build(string yaml, ProxyRuntime? previous = null)
    {
        var result = ConfigLoader.LoadYaml(yaml);
        Assert.True(result.Success, string.Join("; ", result.Errors));
        return new ProxyRuntime(result.Config!, Metrics, TimeProvider.System, NullLogger.Instance, previous);
    }

    private static string Yaml(string url, string members = "- name: u1", string groupExtra = "", string forwardExtra = "", string upstreamExtra = "") =>
        TestProxy.Config($"- name: u1\n  url: \"{url}\"{upstreamExtra}\n- name: u2\n  url: \"{url}\"", members, groupExtra, forwardExtra);

    private static async Task<HttpStatusCode> SendAsync(HttpMessageInvoker invoker, string url)
    {
        using var response = await invoker.SendAsync(new HttpRequestMessage(HttpMethod.Get, url), CancellationToken.None);
        return response.StatusCode;
    }

    [Fact]
    public async Task Reload_UnchangedHttpClient_PoolSharedAndOutlivesThePreviousRuntime()
    {
        await using var up = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u1"));
        var first = Build(Yaml(up.Url));
        var second = Build(Yaml(up.Url, members: "- name: u1\n- name: u2"), first);

        Assert.Same(first.Groups["g"].Invoker, second.Groups["g"].Invoker);
        first.Dispose();
        Assert.Equal(HttpStatusCode.OK, await SendAsync(second.Groups["g"].Invoker, up.Url));

        second.Dispose();
        await Assert.ThrowsAsync<ObjectDisposedException>(() => SendAsync(second.Groups["g"].Invoker, up.Url));
    }

    [Fact]
    public async Task Reload_ChangedHttpClient_NewPoolAndPreviousOneClosedWithItsRuntime()
    {
        await using var up = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u1"));
        var first = Build(Yaml(up.Url));
        var second = Build(Yaml(up.Url, groupExtra: "httpClient:\n  agent: other"), first);

        Assert.NotSame(first.Groups["g"].Invoker, second.Groups["g"].Invoker);
        first.Dispose();
        await Assert.ThrowsAsync<ObjectDisposedException>(() => SendAsync(first.Groups["g"].Invoker, up.Url));
        Assert.Equal(HttpStatusCode.OK, await SendAsync(second.Groups["g"].Invoker, up.Url));
        second.Dispose();
    }

    [Theory]
    [InlineData("", "", true)]
    [InlineData("balance:\n  strategy: roundrobin", "", true)] // the default written out is the same config
    [InlineData("balance:\n  strategy: random", "", false)]
    [InlineData("", "- name: u2", false)]
    public void Reload_Balancer_KeptOnlyWhenMembersAndBalanceUnchanged(string groupExtra, string members, bool kept)
    {
        using var first = Build(Yaml("http://127.0.0.1:1"));
        using var second = Build(Yaml("http://127.0.0.1:1", members: members.Length > 0 ? members : "- name: u1", groupExtra: groupExtra), first);

        Assert.Equal(kept, ReferenceEquals(first.Groups["g"].Balancer, second.Groups["g"].Balancer));
    }

    [Fact]
    public void Reload_MemberWeightChanged_NewBalancer()
    {
        using var first = Build(Yaml("http://127.0.0.1:1", members: "- name: u1\n- name: u2", groupExtra: "balance:\n  strategy: weighted_roundrobin"));
        using var second = Build(Yaml("http://127.0.0.1:1", members: "- name: u1\n  weight: 3\n- name: u2", groupExtra: "balance:\n  strategy: weighted_roundrobin"), first);

        Assert.NotSame(first.Groups["g"].Balancer, second.Groups["g"].Balancer);
    }

    [Theory]
    [InlineData("ratelimit:\n  perSecond: 5\n  burst: 10", "ratelimit:\n  perSecond: 5\n  burst: 10", true)]
    [InlineData("ratelimit:\n  perSecond: 5\n  burst: 10", "ratelimit:\n  perSecond: 5\n  burst: 11", false)]
    [InlineData("", "ratelimit:\n  perSecond: 5", false)]
    public void Reload_ClientLimiter_KeptOnlyWhenRatelimitUnchanged(string before, string after, bool kept)
    {
        using var first = Build(Yaml("http://127.0.0.1:1", forwardExtra: before));
        using var second = Build(Yaml("http://127.0.0.1:1", forwardExtra: after), first);

        Assert.NotNull(second.Forwards[0].Limiter);
        Assert.Equal(kept, ReferenceEquals(first.Forwards[0].Limiter, second.Forwards[0].Limiter));
    }

    [Fact]
    public void Reload_RatelimitRemoved_NoLimiter()
    {
        using var first = Build(Yaml("http://127.0.0.1:1", forwardExtra: "ratelimit:\n  perSecond: 5"));
        using var second = Build(Yaml("http://127.0.0.1:1"), first);

        Assert.Null(second.Forwards[0].Limiter);
    }

    [Theory]
    [InlineData("", true)]
    [InlineData("\n  headers:\n    - op: insert\n      key: x-team\n      value: a", false)]
    public void Reload_Upstream_KeptOnlyWhenItsConfigUnchanged(string upstreamExtra, bool kept)
    {
        using var first = Build(Yaml("http://127.0.0.1:1"));
        using var second = Build(Yaml("http://127.0.0.1:1", upstreamExtra: upstreamExtra), first);

        Assert.Equal(kept, ReferenceEquals(first.Upstreams["u1"], second.Upstreams["u1"]));
        Assert.Same(first.Upstreams["u2"], second.Upstreams["u2"]);
    }
}
