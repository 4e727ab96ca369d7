using System.Net;
using System.Net.Http.Headers;
using System.Net.Sockets;
using LLMProxy.Tests.Infrastructure;
using static LLMProxy.Tests.Reliability.ReliabilityKit;

namespace LLMProxy.Tests.Reliability;

/// <summary>The admin listener is small and where it was told to be: its routed endpoints only, one address, a token on /health and the API.</summary>
public class AdminSurfaceTests
{
    private static string Config(string upstreamUrl, string adminAddress, string forwardAddress = "127.0.0.1", string adminExtra = "") => $"""
        httpServer:
          forwards:
            - name: fwd
              port: 3201
              address: "{forwardAddress}"
              defaultGroup: g
          admin:
            port: 9201
            address: "{adminAddress}"
            {adminExtra}
        upstreams:
          - name: u1
            url: "{upstreamUrl}"
        upstreamGroups:
          - name: g
            upstreams:
              - name: u1
        """;

    private static async Task<bool> AcceptsOnAsync(string ip, int port)
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            await socket.ConnectAsync(new IPEndPoint(IPAddress.Parse(ip), port)).WaitAsync(TimeSpan.FromSeconds(5));
            return true;
        }
        catch (SocketException ex) when (ex.SocketErrorCode == SocketError.ConnectionRefused)
        {
            return false;
        }
    }

    [Theory]
    [InlineData("127.0.0.1", "127.0.0.2")]
    [InlineData("127.0.0.2", "127.0.0.1")]
    public async Task Listeners_BoundToConfiguredAddress_NotReachableOnAnotherLoopbackAddress(string bound, string other)
    {
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u1"));
        await using var proxy = await EnvProxy.StartAsync(Config(upstream.Url, adminAddress: bound, forwardAddress: bound), new Dictionary<string, string>());
        var admin = proxy.Host.AdminPort;
        var forward = proxy.Host.ForwardPorts["fwd"];

        // Linux routes all of 127/8 to lo, so the other address is reachable in principle; only the bind decides.
        Assert.True(await AcceptsOnAsync(bound, admin));
        Assert.False(await AcceptsOnAsync(other, admin), $"admin bound to {bound} accepted on {other}");
        Assert.True(await AcceptsOnAsync(bound, forward));
        Assert.False(await AcceptsOnAsync(other, forward), $"forward bound to {bound} accepted on {other}");
        using var client = Client($"http://{bound}:{admin}");
        Assert.Equal("success", await client.GetStringAsync("/ping"));
    }

    [Theory]
    [InlineData("GET", "/debug", HttpStatusCode.NotFound, "not_found")]
    [InlineData("GET", "/debug/pprof", HttpStatusCode.NotFound, "not_found")]
    [InlineData("GET", "/debug/vars", HttpStatusCode.NotFound, "not_found")]
    [InlineData("GET", "/swagger", HttpStatusCode.NotFound, "not_found")]
    [InlineData("GET", "/swagger/index.html", HttpStatusCode.NotFound, "not_found")]
    [InlineData("GET", "/swagger/v1/swagger.json", HttpStatusCode.NotFound, "not_found")]
    [InlineData("GET", "/openapi/v1.json", HttpStatusCode.NotFound, "not_found")]
    [InlineData("GET", "/metrics/x", HttpStatusCode.NotFound, "not_found")]
    [InlineData("GET", "/healthz", HttpStatusCode.NotFound, "not_found")]
    [InlineData("GET", "/env", HttpStatusCode.NotFound, "not_found")]
    [InlineData("GET", "/config", HttpStatusCode.NotFound, "not_found")]
    [InlineData("GET", "/index.html", HttpStatusCode.NotFound, "not_found")]
    [InlineData("GET", "/api/v1/upstreams/u1", HttpStatusCode.NotFound, "not_found")]
    [InlineData("GET", "/api/v1/reload", HttpStatusCode.NotFound, "not_found")] // reload only when started from a file (ReloadTests)
    [InlineData("GET", "/v1/chat/completions", HttpStatusCode.NotFound, "not_found")]
    [InlineData("POST", "/metrics", HttpStatusCode.MethodNotAllowed, "method_not_allowed")]
    [InlineData("DELETE", "/health", HttpStatusCode.MethodNotAllowed, "method_not_allowed")]
    [InlineData("PUT", "/ping", HttpStatusCode.MethodNotAllowed, "method_not_allowed")]
    [InlineData("POST", "/", HttpStatusCode.MethodNotAllowed, "method_not_allowed")]
    [InlineData("GET", "/api/v1/upstreams/u1/disable", HttpStatusCode.MethodNotAllowed, "method_not_allowed")]
    public async Task AdminListener_AnythingButItsEndpoints_NotFoundOrMethodNotAllowed_OneJsonError(string method, string path,
        HttpStatusCode status, string code)
    {
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u1"));
        await using var proxy = await TestProxy.StartAsync(Config(upstream.Url, "127.0.0.1"));

        using var response = await proxy.Admin.SendAsync(new HttpRequestMessage(new HttpMethod(method), path));

        await AssertErrorAsync(response, status, code);
        Assert.Equal(0, upstream.Count); // the admin port never proxies
    }

    [Fact]
    public async Task AdminListener_PingMetricsHealth_AreTheOnlyAnswers()
    {
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u1"));
        await using var proxy = await TestProxy.StartAsync(Config(upstream.Url, "127.0.0.1"));

        Assert.Equal("success", await proxy.Admin.GetStringAsync("/ping"));
        Assert.Contains("llmproxy_http_requests_total", await proxy.Admin.GetStringAsync("/metrics"));
        Assert.Contains("\"status\":\"ok\"", await proxy.Admin.GetStringAsync("/health"));
        using var head = await proxy.Admin.SendAsync(new HttpRequestMessage(HttpMethod.Head, "/ping"));
        Assert.Equal(HttpStatusCode.OK, head.StatusCode);
    }

    public static TheoryData<string, string?> WrongCredentials() => new()
    {
        { "none", null },
        { "empty bearer", "Bearer " },
        { "wrong token", "Bearer admin-token-xyz" },
        { "prefix of the token", "Bearer admin-token-xy" },
        { "token plus suffix", "Bearer admin-token-xyz1234" },
        { "basic scheme", "Basic " + Convert.ToBase64String("admin:admin-token-xyz123"u8.ToArray()) },
        { "token without scheme", "admin-token-xyz123" },
    };

    [Theory]
    [MemberData(nameof(WrongCredentials))]
    public async Task Health_WithTokenSet_RejectsWrongCredentials_PingAndMetricsStayOpen(string what, string? authorization)
    {
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u1"));
        await using var proxy = await TestProxy.StartAsync(Config(upstream.Url, "127.0.0.1", adminExtra: "token: \"admin-token-xyz123\""));

        using var request = new HttpRequestMessage(HttpMethod.Get, "/health?token=admin-token-xyz123");
        if (authorization is not null)
        {
            request.Headers.TryAddWithoutValidation("Authorization", authorization);
        }
        using var denied = await proxy.Admin.SendAsync(request);
        await AssertErrorAsync(denied, HttpStatusCode.Unauthorized, "unauthorized");
        Assert.DoesNotContain("upstreams", await denied.Content.ReadAsStringAsync());

        Assert.Equal("success", await proxy.Admin.GetStringAsync("/ping"));
        Assert.Contains("llmproxy_", await proxy.Admin.GetStringAsync("/metrics"));
        using var allowed = new HttpRequestMessage(HttpMethod.Get, "/health");
        allowed.Headers.Authorization = new AuthenticationHeaderValue("Bearer", "admin-token-xyz123");
        using var ok = await proxy.Admin.SendAsync(allowed);
        Assert.True(ok.StatusCode == HttpStatusCode.OK, what);
    }
}
