using System.Net;
using System.Net.Http.Headers;
using System.Text;
using LLMProxy.Tests.Infrastructure;
using Microsoft.AspNetCore.Http;
using static LLMProxy.Tests.Reliability.ReliabilityKit;

namespace LLMProxy.Tests.Reliability;

/// <summary>Secrets set through <c>${ENV}</c> never leave the proxy except towards the upstream they belong to.</summary>
public class SecretLeakTests
{
    private const string BearerToken = "sk-rel-bearer-7c1d5e9a3b2f4a60";
    private const string BasicPassword = "basic-pass-4e8a1c7b9d0f2e35";
    private const string AdminToken = "admin-tok-91b3d5f7a2c4e6b8";
    private const string ClientKey = "client-key-3f6a9c2e5b8d1e47";
    private const string QueryKey = "query-key-8d2b6f0a4c9e1b73";

    private static string Config(string bearerUrl, string basicUrl, string hangUrl) => $$"""
        httpServer:
          forwards:
            - name: bearer
              port: 3101
              address: "127.0.0.1"
              defaultGroup: bearer
              keys:
                - name: team_a
                  key: "${CLIENT_KEY}"
            - name: basic
              port: 3102
              address: "127.0.0.1"
              defaultGroup: basic
            - name: hang
              port: 3103
              address: "127.0.0.1"
              defaultGroup: hang
          admin:
            port: 9101
            address: "127.0.0.1"
            token: "${ADMIN_TOKEN}"
        upstreams:
          - name: with-bearer
            url: "{{bearerUrl}}"
            auth:
              type: bearer
              token: "${OPENAI_KEY}"
          - name: with-basic
            url: "{{basicUrl}}"
            auth:
              type: basic
              username: "svc"
              password: "${BASIC_PASSWORD}"
            breaker:
              threshold: 0.5
              minRequests: 2
          - name: hanging
            url: "{{hangUrl}}"
            auth:
              type: bearer
              token: "${OPENAI_KEY}"
        upstreamGroups:
          - name: bearer
            upstreams:
              - name: with-bearer
          - name: basic
            upstreams:
              - name: with-basic
          - name: hang
            upstreams:
              - name: hanging
            httpClient:
              timeout:
                request: 300
        """;

    private static readonly Dictionary<string, string> Env = new()
    {
        ["OPENAI_KEY"] = BearerToken,
        ["BASIC_PASSWORD"] = BasicPassword,
        ["ADMIN_TOKEN"] = AdminToken,
        ["CLIENT_KEY"] = ClientKey,
    };

    /// <summary>Every form a secret could leak in: whole, its distinctive middle, the Basic credential, base64.</summary>
    private static IEnumerable<string> Forms()
    {
        foreach (var s in new[] { BearerToken, BasicPassword, AdminToken, ClientKey, QueryKey })
        {
            yield return s;
            yield return s.Substring(4, s.Length - 8);
        }
        yield return Convert.ToBase64String(Encoding.UTF8.GetBytes("svc:" + BasicPassword));
    }

    private static void AssertClean(string where, string text)
    {
        foreach (var form in Forms())
        {
            Assert.False(text.Contains(form, StringComparison.Ordinal), $"{where} contains secret material '{form}':\n{text}");
        }
    }

    [Fact]
    public async Task EnvSecrets_AfterTrafficWithFailures_AbsentFromLogsMetricsHealthAndErrorBodies()
    {
        var calls = 0;
        await using var bearerUpstream = await ScriptedUpstream.StartAsync(ctx =>
            ScriptedUpstream.Json("with-bearer", Interlocked.Increment(ref calls) <= 2 ? 500 : 200)(ctx));
        await using var refusing = FaultyUpstream.Start(FaultMode.Refuse);
        await using var hanging = FaultyUpstream.Start(FaultMode.HangBeforeHeaders);
        await using var proxy = await EnvProxy.StartAsync(Config(bearerUpstream.Url, refusing.Url, hanging.Url), Env);

        var seen = new StringBuilder();
        async Task Record(string what, HttpResponseMessage r)
        {
            seen.Append(what).Append(' ').Append((int)r.StatusCode).Append('\n').Append(r.Headers).Append(r.Content.Headers)
                .Append(await r.Content.ReadAsStringAsync()).Append('\n');
        }

        foreach (var (forward, times) in new[] { ("bearer", 4), ("basic", 3), ("hang", 1) })
        {
            using var client = Client(proxy.ForwardUrl(forward));
            for (var i = 0; i < times; i++)
            {
                using var request = Chat(path: "/v1/chat/completions?api_key=" + QueryKey);
                request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", ClientKey);
                using var r = await client.SendAsync(request);
                await Record(forward, r);
            }
        }
        using (var wrongKey = Client(proxy.ForwardUrl("bearer")))
        using (var request = Chat())
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", ClientKey[..^1]);
            using var r = await wrongKey.SendAsync(request);
            await Record("bearer", r);
        }
        // The traffic really failed in the ways it was meant to, and the expanded token really reached its upstream.
        var answers = seen.ToString();
        Assert.Contains("bearer 500", answers);
        Assert.Contains("bearer 200", answers);
        Assert.Contains("bearer 401", answers);
        Assert.Contains("basic 502", answers);
        Assert.Contains("basic 503", answers);
        Assert.Contains("hang 504", answers);
        Assert.All(bearerUpstream.Received, r => Assert.Equal("Bearer " + BearerToken, r.Header("Authorization")));

        using (var anonymous = await proxy.Admin.GetAsync("/health"))
        {
            Assert.Equal(HttpStatusCode.Unauthorized, anonymous.StatusCode);
            await Record("health-anonymous", anonymous);
        }
        using (var wrong = new HttpRequestMessage(HttpMethod.Get, "/health"))
        {
            wrong.Headers.Authorization = new AuthenticationHeaderValue("Bearer", AdminToken[..^1]);
            using var r = await proxy.Admin.SendAsync(wrong);
            Assert.Equal(HttpStatusCode.Unauthorized, r.StatusCode);
            await Record("health-wrong", r);
        }
        using (var right = new HttpRequestMessage(HttpMethod.Get, "/health"))
        {
            right.Headers.Authorization = new AuthenticationHeaderValue("Bearer", AdminToken);
            using var r = await proxy.Admin.SendAsync(right);
            Assert.Contains("with-bearer", await r.Content.ReadAsStringAsync());
            await Record("health", r);
        }
        foreach (var (label, path) in new[] { ("metrics", "/metrics"), ("ping", "/ping"), ("unknown", "/nope"), ("health-query", "/health?token=" + AdminToken) })
        {
            using var r = await proxy.Admin.GetAsync(path);
            await Record(label, r);
        }

        var logs = proxy.Logs.AllText;
        Assert.Contains("upstream attempt failed", logs);
        Assert.Contains("circuit breaker", logs);
        AssertClean("responses", seen.ToString());
        AssertClean("logs", logs);
        AssertClean("metrics", await proxy.Admin.GetStringAsync("/metrics"));
    }

    /// <summary>
    /// An upstream that reflects request headers hands the injected key to the client — a limit no proxy can lift
    /// (RELIABILITY.md) — but the proxy itself writes it nowhere: no log line at any level of any category (the
    /// framework's Debug lines included), also when the reflecting answer is a 5xx or one that cannot be passed on.
    /// </summary>
    [Fact]
    public async Task EchoingUpstream_KeyReachesTheClient_NeverTheLogs()
    {
        const string token = "sk-echo-5b7d9f1a3c6e8a20";
        await using var echo = await ScriptedUpstream.StartAsync(async ctx =>
        {
            ctx.Response.StatusCode = ctx.Request.Path == "/fail" ? 500 : 200;
            foreach (var header in ctx.Request.Headers)
            {
                ctx.Response.Headers["X-Echo-" + header.Key] = header.Value;
            }
            await ctx.Response.WriteAsync(string.Join('\n', ctx.Request.Headers.Select(h => $"{h.Key}: {h.Value}")));
        });
        await using var unpassable = FaultyUpstream.Start(FaultMode.Raw);
        unpassable.RawAnswer = Encoding.Latin1.GetBytes($"HTTP/1.1 200 OK\r\nConnection: close\r\nX-Echo: Bearer {token}\u0001\r\nContent-Length: 2\r\n\r\n{{}}");
        var auth = $"  auth:\n    type: bearer\n    token: \"{token}\"";
        await using var echoing = await TestProxy.StartAsync(TestProxy.Config($"- name: echo\n  url: \"{echo.Url}\"\n{auth}", "- name: echo"));
        await using var broken = await TestProxy.StartAsync(TestProxy.Config($"- name: raw\n  url: \"{unpassable.Url}\"\n{auth}", "- name: raw"));

        using (var ok = await echoing.Client.SendAsync(Chat()))
        {
            Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
            // The known limit: what the upstream reflects, the client reads.
            Assert.Equal("Bearer " + token, string.Join(",", ok.Headers.GetValues("X-Echo-Authorization")));
        }
        using (var failed = await echoing.Client.SendAsync(Chat(path: "/fail")))
        {
            Assert.Equal(HttpStatusCode.InternalServerError, failed.StatusCode);
            Assert.Contains(token, await failed.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }
        using (var refused = await broken.Client.SendAsync(Chat()))
        {
            await AssertErrorAsync(refused, HttpStatusCode.BadGateway, "upstream_unavailable");
        }

        Assert.Contains(echoing.Logs.Entries, e => e.Level == Microsoft.Extensions.Logging.LogLevel.Debug);
        Assert.Contains(broken.Logs.Entries, e => e.Message.Contains("upstream attempt failed", StringComparison.Ordinal));
        Assert.DoesNotContain(token[3..^3], echoing.Logs.AllText, StringComparison.Ordinal);
        Assert.DoesNotContain(token[3..^3], broken.Logs.AllText, StringComparison.Ordinal);
    }
}
