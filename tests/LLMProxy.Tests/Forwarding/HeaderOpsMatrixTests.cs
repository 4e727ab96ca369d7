using System.Net;
using System.Text;
using LLMProxy.Tests.Infrastructure;
using LLMProxy.Tests.Reliability;

namespace LLMProxy.Tests.Forwarding;

/// <summary>
/// Header ops work for every kind of header name — request headers, content headers, custom ones — on requests
/// with and without a body, and headers a client names in <c>Connection</c> are stripped without breaking the
/// request. A table: op × name × body.
/// </summary>
public class HeaderOpsMatrixTests
{
    private static readonly string[] Names = ["Authorization", "User-Agent", "Accept", "Content-Type", "x-api-key", "Content-Language"];

    public static TheoryData<string, string, bool> Matrix()
    {
        var data = new TheoryData<string, string, bool>();
        foreach (var op in new[] { "insert", "replace", "remove" })
        {
            foreach (var name in Names)
            {
                data.Add(op, name, true);
                data.Add(op, name, false);
            }
        }
        return data;
    }

    private static HttpRequestMessage Request(bool withBody, bool clientSendsHeader, string name)
    {
        var request = withBody
            ? new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
            {
                Content = new ByteArrayContent(Encoding.UTF8.GetBytes("{\"model\":\"m\"}")),
            }
            : new HttpRequestMessage(HttpMethod.Get, "/v1/models");
        if (clientSendsHeader)
        {
            if (!request.Headers.TryAddWithoutValidation(name, "from-client"))
            {
                request.Content?.Headers.TryAddWithoutValidation(name, "from-client");
            }
        }
        return request;
    }

    [Theory]
    [MemberData(nameof(Matrix))]
    public async Task HeaderOp_AnyName_WithOrWithoutBody_AppliedNever502(string op, string name, bool withBody)
    {
        var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u"));
        await using var _ = upstream;
        var value = op == "remove" ? "" : "\n      value: \"from-config\"";
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(
            $"- name: u\n  url: \"{upstream.Url}\"\n  headers:\n    - op: {op}\n      key: {name}{value}", "- name: u"));

        foreach (var clientSends in new[] { true, false })
        {
            using var response = await proxy.Client.SendAsync(Request(withBody, clientSends, name));
            Assert.True(response.StatusCode == HttpStatusCode.OK,
                $"{op} {name} body={withBody} clientSends={clientSends}: {(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}");
            Assert.True(upstream.Received.TryDequeue(out var seen));
            var got = seen!.Header(name);
            var expected = op switch
            {
                "remove" => null,
                "replace" => "from-config",
                // The agent stands in for a client's missing User-Agent before the ops run.
                _ => clientSends ? "from-client" : name == "User-Agent" ? "LLMProxy/1.0" : "from-config",
            };
            // A body-less request has no content to carry content headers; .NET drops them, which is the only
            // meaningful outcome (a Content-Type without content).
            var contentHeader = name.StartsWith("Content-", StringComparison.OrdinalIgnoreCase);
            if (!withBody && contentHeader && expected is not null)
            {
                Assert.True(got is null || got == expected, $"{op} {name}: got {got}");
                continue;
            }
            if (name == "User-Agent" && expected is null)
            {
                Assert.Null(got);
                continue;
            }
            Assert.True(expected == got, $"{op} {name} body={withBody} clientSends={clientSends}: expected '{expected}', got '{got}'");
        }
    }

    [Theory]
    [InlineData("Authorization", true)]
    [InlineData("Authorization", false)]
    [InlineData("Content-Type", true)]
    [InlineData("Content-Length", true)]
    [InlineData("x-api-key", true)]
    [InlineData("User-Agent, Accept, Content-Type, Authorization", true)]
    [InlineData("Host", false)]
    public async Task ConnectionNamedHeader_Stripped_ConfiguredKeyStillInjected(string named, bool withBody)
    {
        var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u"));
        await using var _ = upstream;
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(
            $"- name: u\n  url: \"{upstream.Url}\"\n  auth:\n    type: bearer\n    token: sk-configured\n  headers:\n    - op: insert\n      key: x-api-key\n      value: sk-header",
            "- name: u"));
        using var request = Request(withBody, clientSendsHeader: false, "x");
        request.Headers.TryAddWithoutValidation("Authorization", "Bearer client-key");
        request.Headers.TryAddWithoutValidation("x-api-key", "client-x-api-key");
        request.Headers.TryAddWithoutValidation("Connection", named);
        using var response = await proxy.Client.SendAsync(request);

        Assert.True(response.StatusCode == HttpStatusCode.OK, $"{(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}");
        var seen = Assert.Single(upstream.Received);
        Assert.Equal("Bearer sk-configured", seen.Header("Authorization"));
        // Stripped as hop-by-hop, then the configured insert fills the gap.
        Assert.Equal(named.Contains("x-api-key", StringComparison.Ordinal) ? "sk-header" : "client-x-api-key", seen.Header("x-api-key"));
        if (withBody)
        {
            Assert.Equal("{\"model\":\"m\"}", Encoding.UTF8.GetString(seen.Body));
        }
    }

    [Fact]
    public async Task AnthropicSetup_RemoveAuthorization_SetXApiKey_PostWorks()
    {
        var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u"));
        await using var _ = upstream;
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(
            $"- name: u\n  url: \"{upstream.Url}\"\n  headers:\n    - op: remove\n      key: Authorization\n    - op: replace\n      key: x-api-key\n      value: sk-ant-configured\n    - op: insert\n      key: anthropic-version\n      value: \"2023-06-01\"",
            "- name: u"));
        using var request = ReliabilityKit.Chat(path: "/v1/messages");
        request.Headers.TryAddWithoutValidation("Authorization", "Bearer sk-ant-from-sdk");
        using var response = await proxy.Client.SendAsync(request);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var seen = Assert.Single(upstream.Received);
        Assert.Null(seen.Header("Authorization"));
        Assert.Equal("sk-ant-configured", seen.Header("x-api-key"));
        Assert.Equal("2023-06-01", seen.Header("anthropic-version"));
    }
}
