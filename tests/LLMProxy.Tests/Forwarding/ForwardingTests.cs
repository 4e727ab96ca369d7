using System.Net;
using System.Net.Http.Headers;
using System.Text;
using LLMProxy.Tests.Infrastructure;
using Microsoft.AspNetCore.Http;

namespace LLMProxy.Tests.Forwarding;

public class ForwardingTests
{
    private static string Upstream(string name, string url, string extra = "") => $"""
        - name: {name}
          url: "{url}"
        {extra}
        """;

    [Theory]
    [InlineData("GET")]
    [InlineData("POST")]
    [InlineData("PUT")]
    [InlineData("PATCH")]
    [InlineData("DELETE")]
    [InlineData("OPTIONS")]
    public async Task Forward_AnyMethod_ReachesUpstreamWithBody(string method)
    {
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u1"));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(Upstream("u1", upstream.Url), "- name: u1"));

        using var request = new HttpRequestMessage(new HttpMethod(method), "/v1/things?x=1");
        if (method is not "GET" and not "OPTIONS")
        {
            request.Content = new StringContent("{\"a\":1}", Encoding.UTF8, "application/json");
        }
        using var response = await proxy.Client.SendAsync(request);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var got = Assert.Single(upstream.Received);
        Assert.Equal(method, got.Method);
        Assert.Equal("/v1/things", got.Path);
        Assert.Equal("?x=1", got.Query);
        if (request.Content is not null)
        {
            Assert.Equal("{\"a\":1}", Encoding.UTF8.GetString(got.Body));
        }
    }

    [Fact]
    public async Task Url_FullEndpoint_ReplacesClientPathKeepsQuery()
    {
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u1"));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(Upstream("u1", upstream.Url + "/v1/chat/completions"), "- name: u1"));

        using var response = await proxy.Client.PostAsync("/anything/else?api-version=2", new StringContent("{}"));

        var got = Assert.Single(upstream.Received);
        Assert.Equal("/v1/chat/completions", got.Path);
        Assert.Equal("?api-version=2", got.Query);
    }

    [Fact]
    public async Task Url_FullEndpointWithQuery_UsesUrlQuery()
    {
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u1"));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(Upstream("u1", upstream.Url + "/deploy/chat?api-version=1"), "- name: u1"));

        using var response = await proxy.Client.PostAsync("/v1/chat/completions?api-version=9", new StringContent("{}"));

        var got = Assert.Single(upstream.Received);
        Assert.Equal("/deploy/chat", got.Path);
        Assert.Equal("?api-version=1", got.Query);
    }

    [Fact]
    public async Task Url_Base_AppendsClientPathAndQuery()
    {
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u1"));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(Upstream("u1", upstream.Url + "/"), "- name: u1"));

        using var response = await proxy.Client.GetAsync("/v1/models?limit=5");

        var got = Assert.Single(upstream.Received);
        Assert.Equal("/v1/models", got.Path);
        Assert.Equal("?limit=5", got.Query);
    }

    [Theory]
    [InlineData("")]
    [InlineData("/v1/chat/completions")]
    public async Task Url_SuccessiveRequests_EachReachesItsOwnPathAndQuery(string endpointPath)
    {
        // The upstream keeps the URI of its last request for the next one to the same path and query: a request to
        // another path or query, and one back to the first, must each get their own.
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u1"));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(Upstream("u1", upstream.Url + endpointPath), "- name: u1"));
        string[] sent = ["/v1/a?x=1", "/v1/a?x=1", "/v1/a?x=2", "/v1/a", "/v1/b", "/v1/b?x=1", "/v1/a?x=1", "/v1/b?x=1&y=2"];

        foreach (var path in sent)
        {
            using var response = await proxy.Client.PostAsync(path, new StringContent("{}"));
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }

        var got = upstream.Received.Select(r => r.Path + r.Query).ToArray();
        var expected = sent.Select(p => (endpointPath == "" ? p.Split('?')[0] : endpointPath) + (p.Contains('?') ? p[p.IndexOf('?')..] : "")).ToArray();
        Assert.Equal(expected, got);
    }

    [Fact]
    public async Task Headers_ForwardingHeaders_SetAndHopByHopStripped()
    {
        await using var upstream = await ScriptedUpstream.StartAsync(async ctx =>
        {
            ctx.Response.Headers["X-Multi"] = new Microsoft.Extensions.Primitives.StringValues(["a", "b"]);
            ctx.Response.Headers["Keep-Alive"] = "timeout=5";
            await ctx.Response.WriteAsync("ok");
        });
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(Upstream("u1", upstream.Url), "- name: u1"));

        using var request = new HttpRequestMessage(HttpMethod.Get, "/x");
        request.Headers.TryAddWithoutValidation("X-Forwarded-For", "203.0.113.9");
        request.Headers.TryAddWithoutValidation("Connection", "X-Secret-Hop");
        request.Headers.TryAddWithoutValidation("X-Secret-Hop", "1");
        request.Headers.TryAddWithoutValidation("Proxy-Connection", "keep-alive");
        request.Headers.TryAddWithoutValidation("X-Custom", ["one", "two"]);
        using var response = await proxy.Client.SendAsync(request);

        var got = Assert.Single(upstream.Received);
        Assert.Equal("203.0.113.9, 127.0.0.1", got.Header("X-Forwarded-For"));
        Assert.Equal("http", got.Header("X-Forwarded-Proto"));
        Assert.StartsWith("127.0.0.1:", got.Header("X-Forwarded-Host"));
        Assert.Equal($"127.0.0.1:{upstream.Port}", got.Header("Host"));
        Assert.Null(got.Header("X-Secret-Hop"));
        Assert.Null(got.Header("Proxy-Connection"));
        Assert.Equal("one, two", got.Header("X-Custom"));
        Assert.Equal(["a", "b"], response.Headers.GetValues("X-Multi"));
        Assert.False(response.Headers.Contains("Keep-Alive"));
    }

    [Fact]
    public async Task RequestId_KeptWhenSent_GeneratedOtherwise_ReturnedToClient()
    {
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u1"));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(Upstream("u1", upstream.Url), "- name: u1"));

        using var withId = new HttpRequestMessage(HttpMethod.Get, "/a");
        withId.Headers.Add("X-Request-ID", "client-id-123");
        using var r1 = await proxy.Client.SendAsync(withId);
        using var r2 = await proxy.Client.GetAsync("/b");

        var received = upstream.Received.ToArray();
        Assert.Equal("client-id-123", received[0].Header("X-Request-ID"));
        Assert.Equal("client-id-123", r1.Headers.GetValues("X-Request-ID").Single());
        var generated = r2.Headers.GetValues("X-Request-ID").Single();
        Assert.False(string.IsNullOrWhiteSpace(generated));
        Assert.Equal(generated, received[1].Header("X-Request-ID"));
    }

    [Fact]
    public async Task Auth_Bearer_ReplacesClientAuthorization()
    {
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u1"));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(Upstream("u1", upstream.Url, """
              auth:
                type: bearer
                token: "sk-upstream-secret-9999"
            """), "- name: u1"));

        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions") { Content = new StringContent("{}") };
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", "client-key");
        using var response = await proxy.Client.SendAsync(request);

        Assert.Equal("Bearer sk-upstream-secret-9999", Assert.Single(upstream.Received).Header("Authorization"));
        Assert.DoesNotContain("sk-upstream-secret-9999", proxy.Logs.AllText);
    }

    [Fact]
    public async Task Auth_Basic_SetsBase64Credentials()
    {
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u1"));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(Upstream("u1", upstream.Url, """
              auth:
                type: basic
                username: "alice"
                password: "pa:ss"
            """), "- name: u1"));

        using var response = await proxy.Client.GetAsync("/");

        Assert.Equal("Basic " + Convert.ToBase64String(Encoding.UTF8.GetBytes("alice:pa:ss")), Assert.Single(upstream.Received).Header("Authorization"));
    }

    [Fact]
    public async Task Auth_None_PassesClientAuthorizationThrough()
    {
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u1"));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(Upstream("u1", upstream.Url), "- name: u1"));

        using var request = new HttpRequestMessage(HttpMethod.Get, "/");
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", "client-key");
        using var response = await proxy.Client.SendAsync(request);

        Assert.Equal("Bearer client-key", Assert.Single(upstream.Received).Header("Authorization"));
    }

    [Fact]
    public async Task HeaderOps_RunAfterAuthInOrder()
    {
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u1"));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(Upstream("u1", upstream.Url, """
              auth:
                type: bearer
                token: "sk-abc-123456789"
              headers:
                - op: insert
                  key: X-Present
                  value: "from-config"
                - op: insert
                  key: X-Absent
                  value: "inserted"
                - op: replace
                  key: x-api-key
                  value: "replaced"
                - op: remove
                  key: X-Drop
                - op: replace
                  key: Authorization
                  value: "Token override"
            """), "- name: u1"));

        using var request = new HttpRequestMessage(HttpMethod.Get, "/");
        request.Headers.Add("X-Present", "from-client");
        request.Headers.Add("X-Api-Key", "client");
        request.Headers.Add("X-Drop", "bye");
        using var response = await proxy.Client.SendAsync(request);

        var got = Assert.Single(upstream.Received);
        Assert.Equal("from-client", got.Header("X-Present"));
        Assert.Equal("inserted", got.Header("X-Absent"));
        Assert.Equal("replaced", got.Header("X-Api-Key"));
        Assert.Null(got.Header("X-Drop"));
        Assert.Equal("Token override", got.Header("Authorization"));
    }

    [Fact]
    public async Task UserAgent_AgentUsedOnlyWhenClientSentNone()
    {
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u1"));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(Upstream("u1", upstream.Url), "- name: u1", groupExtra: """
            httpClient:
              agent: "MyAgent/2.0"
            """));

        using var r1 = await proxy.Client.GetAsync("/none");
        using var withUa = new HttpRequestMessage(HttpMethod.Get, "/mine");
        withUa.Headers.TryAddWithoutValidation("User-Agent", "client-sdk/1.2");
        using var r2 = await proxy.Client.SendAsync(withUa);

        var received = upstream.Received.ToArray();
        Assert.Equal("MyAgent/2.0", received[0].Header("User-Agent"));
        Assert.Equal("client-sdk/1.2", received[1].Header("User-Agent"));
    }
}
