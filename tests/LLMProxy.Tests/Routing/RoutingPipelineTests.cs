using System.Net;
using System.Text;
using System.Text.Json;
using LLMProxy.Tests.Forwarding;
using LLMProxy.Tests.Infrastructure;
using LLMProxy.Tests.Reliability;

namespace LLMProxy.Tests.Routing;

/// <summary>
/// SPEC §12 through the real pipeline: path and model routes choose the group, members skip models they do not
/// serve (404 <c>model_not_found</c> when none does), <c>modelMap</c> rewrites the body only for its upstream, and a
/// reload that adds a route keeps every upstream's state.
/// </summary>
public class RoutingPipelineTests
{
    /// <summary>One forward over three groups: <c>chat</c> (default), <c>anthropic</c>, <c>mini</c>.</summary>
    private static string Yaml(Upstreams ups, string routes, string chatMembers = "- name: chat", string extraUpstreams = "") => $"""
        httpServer:
          forwards:
            - name: fwd
              port: 3000
              address: "127.0.0.1"
              defaultGroup: chat
              routes:
        {routes}
          admin:
            port: 9000
            address: "127.0.0.1"
        upstreams:
          - name: chat
            url: "{ups["chat"].Url}"
          - name: anthropic
            url: "{ups["anthropic"].Url}"
          - name: mini
            url: "{ups["mini"].Url}"
        {extraUpstreams}
        upstreamGroups:
          - name: chat
            upstreams:
        {Indent(chatMembers, 6)}
          - name: anthropic
            upstreams:
              - name: anthropic
          - name: mini
            upstreams:
              - name: mini
        """;

    private static string Indent(string text, int n) => string.Join('\n', text.Split('\n').Select(l => new string(' ', n) + l));

    private const string Routes = """
              - path: /v1/messages
                group: anthropic
              - name: small
                model: "gpt-4o-mini*"
                group: mini
              - model: "text-embedding-*"
                path: /v1/embeddings
                group: mini
        """;

    private static Task<Upstreams> StartUpstreamsAsync(params string[] extra) =>
        Upstreams.StartAsync([.. new[] { "chat", "anthropic", "mini" }.Concat(extra).Select(n => (n, ScriptedUpstream.Json(n)))]);

    private static HttpRequestMessage Post(string path, string? model) => new(HttpMethod.Post, path)
    {
        Content = new StringContent(model is null ? "{\"messages\":[]}" : $"{{\"model\":\"{model}\",\"messages\":[]}}", Encoding.UTF8, "application/json"),
    };

    private static async Task<string?> SendAsync(TestProxy proxy, HttpRequestMessage request)
    {
        using var response = await proxy.Client.SendAsync(request);
        Assert.True(response.StatusCode == HttpStatusCode.OK, $"{(int)response.StatusCode}: {await response.Content.ReadAsStringAsync()}");
        return response.UpstreamName();
    }

    [Fact]
    public async Task Routes_PathAndModel_FirstMatchWins_ElseDefaultGroup()
    {
        await using var ups = await StartUpstreamsAsync();
        await using var proxy = await TestProxy.StartAsync(Yaml(ups, Routes));

        Assert.Equal("anthropic", await SendAsync(proxy, Post("/v1/messages", "gpt-4o-mini")));        // path route first
        Assert.Equal("anthropic", await SendAsync(proxy, Post("/v1/messages/count_tokens", "claude")));  // segment-aligned prefix
        Assert.Equal("chat", await SendAsync(proxy, Post("/v1/messagesX", "claude")));                  // not a segment
        Assert.Equal("mini", await SendAsync(proxy, Post("/v1/chat/completions", "GPT-4o-mini-2024")));  // glob, any case
        Assert.Equal("chat", await SendAsync(proxy, Post("/v1/chat/completions", "gpt-4o")));
        Assert.Equal("chat", await SendAsync(proxy, Post("/v1/chat/completions", null)));                // no model: no model route
        Assert.Equal("mini", await SendAsync(proxy, Post("/v1/embeddings", "text-embedding-3-small")));  // path and model
        Assert.Equal("chat", await SendAsync(proxy, Post("/v1/embeddings", "other-embedder")));
        Assert.Equal("chat", await SendAsync(proxy, Post("/v1/completions", "text-embedding-3-small")));  // model without its path
        using (var models = await proxy.Client.GetAsync("/v1/models"))
        {
            Assert.Equal(HttpStatusCode.OK, models.StatusCode);
            Assert.Equal("chat", models.UpstreamName());
        }

        var metrics = await proxy.Admin.GetStringAsync("/metrics");
        AssertSample(metrics, "llmproxy_route_requests_total{forward=\"fwd\",route=\"0\",group=\"anthropic\"}", 2);
        AssertSample(metrics, "llmproxy_route_requests_total{forward=\"fwd\",route=\"small\",group=\"mini\"}", 1);
        AssertSample(metrics, "llmproxy_route_requests_total{forward=\"fwd\",route=\"2\",group=\"mini\"}", 1);
        await AssertSampleAsync(proxy.Admin, "llmproxy_route_requests_total{forward=\"fwd\",route=\"default\",group=\"chat\"}", 6);
        var lines = ReliabilityKit.AccessLines(proxy.Logs);
        Assert.Contains(lines, l => l.Contains("group=mini model=GPT-4o-mini-2024 ", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.Contains("GET /v1/models 200", StringComparison.Ordinal) && l.Contains("group=chat model=- ", StringComparison.Ordinal));
    }

    [Fact]
    public async Task MemberModels_SkipMembersThatDoNotServe_404WhenNoneDoes_ModelLessRequestsServed()
    {
        await using var ups = await StartUpstreamsAsync("gpt", "claude");
        var members = "- name: gpt\n- name: claude";
        var extra = $"""
              - name: gpt
                url: "{ups["gpt"].Url}"
                models: ["gpt-4o*", "o1"]
              - name: claude
                url: "{ups["claude"].Url}"
                models: ["claude-*"]
            """;
        await using var proxy = await TestProxy.StartAsync(Yaml(ups, "      []", members, extra).Replace("routes:\n      []", "routes: []"));

        for (var i = 0; i < 4; i++)
        {
            Assert.Equal("claude", await SendAsync(proxy, Post("/v1/chat/completions", "claude-3-5-sonnet")));
            Assert.Equal("gpt", await SendAsync(proxy, Post("/v1/chat/completions", "GPT-4o")));
        }
        using (var missing = await proxy.Client.SendAsync(Post("/v1/chat/completions", "llama-3")))
        {
            await ReliabilityKit.AssertErrorAsync(missing, HttpStatusCode.NotFound, "model_not_found");
        }
        var names = new HashSet<string?>();
        for (var i = 0; i < 4; i++)
        {
            using var list = await proxy.Client.GetAsync("/v1/models");
            Assert.Equal(HttpStatusCode.OK, list.StatusCode);
            names.Add(list.UpstreamName());
        }
        Assert.Equal(["claude", "gpt"], names.Order());
        Assert.All(ups["claude"].Received.Where(r => r.Method == "POST"), r => Assert.Contains("claude-3-5-sonnet", Encoding.UTF8.GetString(r.Body)));
        Assert.Contains(ReliabilityKit.AccessLines(proxy.Logs), l => l.Contains(" 404 ", StringComparison.Ordinal) && l.Contains("outcome=model_not_found", StringComparison.Ordinal));
    }

    [Fact]
    public async Task ModelMap_RewritesBodyForItsUpstreamOnly_ContentLengthFollows_RetryGetsOriginal()
    {
        var failMapped = 1;
        await using var ups = await Upstreams.StartAsync(
            ("chat", ScriptedUpstream.Json("chat")), ("anthropic", ScriptedUpstream.Json("anthropic")), ("mini", ScriptedUpstream.Json("mini")),
            ("mapped", ctx => Volatile.Read(ref failMapped) == 1 ? ScriptedUpstream.Json("mapped", 503)(ctx) : ScriptedUpstream.Json("mapped")(ctx)),
            ("plain", ScriptedUpstream.Json("plain")));
        var extra = $"""
              - name: mapped
                url: "{ups["mapped"].Url}"
                modelMap:
                  "gpt-4o": "gpt-4o-2024-08-06"
              - name: plain
                url: "{ups["plain"].Url}"
            """;
        await using var proxy = await TestProxy.StartAsync(Yaml(ups, "      []", "- name: mapped\n- name: plain", extra).Replace("routes:\n      []", "routes: []"));
        const string Body = "{\"model\":\"gpt-4o\", \"messages\":[{\"role\":\"user\",\"content\":\"h\\u00e9\"}],\"stream\":false}";

        // The mapped member answers 503: the retry on "plain" must get the body exactly as the client sent it.
        using (var first = await proxy.Client.SendAsync(new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
        {
            Content = new StringContent(Body, Encoding.UTF8, "application/json"),
        }))
        {
            Assert.Equal(HttpStatusCode.OK, first.StatusCode);
            Assert.Equal("plain", first.UpstreamName());
        }
        var rewritten = Body.Replace("\"gpt-4o\"", "\"gpt-4o-2024-08-06\"", StringComparison.Ordinal);
        var sentToMapped = Assert.Single(ups["mapped"].Received);
        Assert.Equal(rewritten, Encoding.UTF8.GetString(sentToMapped.Body));
        Assert.Equal(Encoding.UTF8.GetByteCount(rewritten).ToString(System.Globalization.CultureInfo.InvariantCulture), sentToMapped.Header("Content-Length"));
        var sentToPlain = Assert.Single(ups["plain"].Received);
        Assert.Equal(Body, Encoding.UTF8.GetString(sentToPlain.Body));
        Assert.Equal(Encoding.UTF8.GetByteCount(Body).ToString(System.Globalization.CultureInfo.InvariantCulture), sentToPlain.Header("Content-Length"));

        // A model without a mapping goes as sent.
        Volatile.Write(ref failMapped, 0);
        while (ups["mapped"].Received.TryDequeue(out _))
        {
        }
        for (var i = 0; i < 2; i++)
        {
            using var r = await proxy.Client.SendAsync(Post("/v1/chat/completions", "gpt-4o-mini"));
            Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        }
        Assert.All(ups["mapped"].Received, r => Assert.Contains("\"model\":\"gpt-4o-mini\"", Encoding.UTF8.GetString(r.Body)));
    }

    [Fact]
    public async Task Reload_AddsRoute_KeepsUpstreamStateAndConnections()
    {
        await using var ups = await StartUpstreamsAsync();
        var routes = "      []";
        string Current() => Yaml(ups, routes).Replace("routes:\n      []", "routes: []");
        await using var proxy = await TestProxy.StartAsync(Current(), reloadYaml: Current);

        Assert.Equal("chat", await SendAsync(proxy, Post("/v1/messages", "claude")));
        Assert.Equal("chat", await SendAsync(proxy, Post("/v1/chat/completions", "m")));
        var before = ups["chat"].Received.Select(r => r.ConnectionId).Distinct().ToList();

        routes = "              - path: /v1/messages\n                group: anthropic";
        using (var reload = await proxy.Admin.PostAsync("/api/v1/reload", null))
        {
            Assert.Equal(HttpStatusCode.OK, reload.StatusCode);
        }

        Assert.Equal("anthropic", await SendAsync(proxy, Post("/v1/messages", "claude")));
        Assert.Equal("chat", await SendAsync(proxy, Post("/v1/chat/completions", "m")));
        // The chat group's pool came along: its upstream saw one connection before and after the reload.
        Assert.Equal(before, ups["chat"].Received.Select(r => r.ConnectionId).Distinct().ToList());
        await AssertSampleAsync(proxy.Admin, "llmproxy_route_requests_total{forward=\"fwd\",route=\"0\",group=\"anthropic\"}", 1);
        // Counters of unchanged upstreams kept counting across the reload.
        await AssertSampleAsync(proxy.Admin, "llmproxy_upstream_requests_total{group=\"chat\",upstream=\"chat\",status_code=\"200\"}", 3);
    }
}
