using System.Net;
using System.Text;
using LLMProxy.Tests.Infrastructure;

namespace LLMProxy.Tests.Runtime;

/// <summary>Groups of more than 64 members (many keys of one account type) through the real pipeline: a member past the
/// 64th is tried once per request and follows its <c>models</c> like any other.</summary>
public class LargeGroupPipelineTests
{
    private const int Members = 130;

    /// <summary><see cref="Members"/> upstreams named u0..u129, all on <paramref name="url"/>, each with <paramref name="extra"/>.</summary>
    private static string Upstreams(string url, Func<int, string>? extra = null) => string.Join('\n', Enumerable.Range(0, Members).Select(i =>
        $"- name: u{i}\n  url: \"{url}\"" + (extra?.Invoke(i) is { Length: > 0 } e ? "\n  " + e : "")));

    private static string Group(Func<int, string>? extra = null) => string.Join('\n', Enumerable.Range(0, Members).Select(i =>
        $"- name: u{i}" + (extra?.Invoke(i) is { Length: > 0 } e ? "\n  " + e : "")));

    [Fact]
    public async Task MembersPast64_FailingAttempts_EachRetryOnAnotherMember()
    {
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("any", 500));
        // Only u100..u129 are in the top tier, and iphash sends one client to one member: every attempt of the request
        // lands past the 64th member, where a tried set of 64 bits forgot them.
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(Upstreams(upstream.Url), Group(i => i >= 100 ? "priority: 1" : ""),
            groupExtra: "balance:\n  strategy: iphash\nretry:\n  attempts: 5"));

        using var response = await proxy.Client.GetAsync("/v1/models");

        Assert.Equal(HttpStatusCode.InternalServerError, response.StatusCode);
        Assert.Equal("5", response.Headers.GetValues("X-LLMProxy-Attempts").Single());
        var failed = proxy.Logs.Entries.Where(e => e.Message.Contains("upstream attempt failed", StringComparison.Ordinal))
            .Select(e => e.Message.Split("upstream=")[1].Split(' ')[0]).ToArray();
        Assert.Equal(5, failed.Length);
        Assert.Equal(5, failed.Distinct().Count());
        Assert.All(failed, name => Assert.True(int.Parse(name[1..]) >= 100, name));
    }

    [Fact]
    public async Task MemberPast64_TheOnlyOneServingAModel_ServesIt_AndNothingElse()
    {
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("any"));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(
            Upstreams(upstream.Url, i => i == Members - 1 ? "models: [\"b\"]" : "models: [\"a\"]"), Group()));

        for (var i = 0; i < 3; i++)
        {
            using var b = await proxy.Client.PostAsync("/v1/chat/completions", new StringContent("{\"model\":\"b\"}", Encoding.UTF8, "application/json"));
            Assert.Equal(HttpStatusCode.OK, b.StatusCode);
            Assert.Equal($"u{Members - 1}", b.Headers.GetValues("X-LLMProxy-Upstream").Single());
        }
        for (var i = 0; i < 2 * Members; i++)
        {
            using var a = await proxy.Client.PostAsync("/v1/chat/completions", new StringContent("{\"model\":\"a\"}", Encoding.UTF8, "application/json"));
            Assert.Equal(HttpStatusCode.OK, a.StatusCode);
            Assert.NotEqual($"u{Members - 1}", a.Headers.GetValues("X-LLMProxy-Upstream").Single());
        }
        using var none = await proxy.Client.PostAsync("/v1/chat/completions", new StringContent("{\"model\":\"c\"}", Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.NotFound, none.StatusCode);
    }
}
