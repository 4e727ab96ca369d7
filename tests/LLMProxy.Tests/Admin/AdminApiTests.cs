using System.Net;
using System.Net.Http.Headers;
using System.Text.Json;
using LLMProxy.Mock;
using LLMProxy.Tests.Forwarding;
using LLMProxy.Tests.Infrastructure;
using LLMProxy.Tests.Reliability;
using Microsoft.Extensions.Time.Testing;

namespace LLMProxy.Tests.Admin;

/// <summary>SPEC §16 admin API through the real admin listener: the upstream report, operator actions, the redacted
/// config, the one auth guard and the JSON errors.</summary>
public class AdminApiTests
{
    private const string AdminToken = "admin-secret-token-0042";

    private static string Upstream(string name, string url, string extra = "") => $"""
        - name: {name}
          url: "{url}"
          auth:
            type: bearer
            token: "sk-{name}-secret-key-9999"
        {extra}
        """;

    private static async Task<JsonElement> GetJsonAsync(HttpClient admin, string path, string? token = null)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, path);
        if (token is not null)
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        }
        using var response = await admin.SendAsync(request);
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, $"{path}: {(int)response.StatusCode} {text}");
        return JsonDocument.Parse(text).RootElement.Clone();
    }

    private static async Task<JsonElement> ActAsync(HttpClient admin, string name, string action, string? token = null)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, $"/api/v1/upstreams/{Uri.EscapeDataString(name)}/{action}");
        if (token is not null)
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        }
        using var response = await admin.SendAsync(request);
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, $"{action} {name}: {(int)response.StatusCode} {text}");
        return JsonDocument.Parse(text).RootElement.GetProperty("upstream").Clone();
    }

    /// <summary>Members of the (first) group by name, from <c>GET /api/v1/upstreams</c>.</summary>
    private static async Task<Dictionary<string, JsonElement>> MembersAsync(HttpClient admin, string? token = null)
    {
        var report = await GetJsonAsync(admin, "/api/v1/upstreams", token);
        return report.GetProperty("groups")[0].GetProperty("upstreams").EnumerateArray().ToDictionary(u => u.GetProperty("name").GetString()!);
    }

    /// <summary>The members once <paramref name="ready"/> holds: the client can read an answer's end a moment before the
    /// proxy has accounted for it (tokens, last error).</summary>
    private static async Task<Dictionary<string, JsonElement>> MembersWhenAsync(HttpClient admin, Func<Dictionary<string, JsonElement>, bool> ready)
    {
        var members = new Dictionary<string, JsonElement>();
        await WaitUntilAsync(async () => ready(members = await MembersAsync(admin)), TimeSpan.FromSeconds(5),
            () => Task.FromResult(string.Join('\n', members.Values.Select(m => m.GetRawText()))));
        return members;
    }

    private static bool Has(JsonElement member, string property) => member.GetProperty(property).ValueKind != JsonValueKind.Null;

    [Fact]
    public async Task Upstreams_ReportStateBudgetsPriorityAndLastMinute_CountedFromRealAnswers()
    {
        await using var a = await MockServer.StartAsync(new MockOptions { Port = 0, Name = "a" });
        await using var b = await MockServer.StartAsync(new MockOptions { Port = 0, Name = "b" });
        var yaml = TestProxy.Config(
            Upstream("a", a.BaseUrl.ToString().TrimEnd('/'), "  ratelimit:\n    perSecond: 100\n    requestsPerMinute: 600\n    tokensPerMinute: 100000\n    maxConcurrent: 4\n  breaker:\n    threshold: 0.5")
            + "\n" + Upstream("b", b.BaseUrl.ToString().TrimEnd('/')),
            "- name: a\n  priority: 2\n- name: b");
        // Fake time: the RPM and TPM buckets do not refill while the test counts.
        await using var proxy = await TestProxy.StartAsync(yaml, new FakeTimeProvider(DateTimeOffset.UtcNow));

        long tokens = 0;
        for (var i = 0; i < 5; i++)
        {
            using var r = await proxy.Client.SendAsync(ReliabilityKit.Chat());
            Assert.Equal(HttpStatusCode.OK, r.StatusCode);
            Assert.Equal("a", r.Via());
            using var body = JsonDocument.Parse(await r.Content.ReadAsStringAsync());
            var usage = body.RootElement.GetProperty("usage");
            tokens += usage.GetProperty("prompt_tokens").GetInt64() + usage.GetProperty("completion_tokens").GetInt64();
        }
        Assert.True(tokens > 0);

        await MembersWhenAsync(proxy.Admin, m => m["a"].GetProperty("lastMinute").GetProperty("tokens").GetInt64() >= tokens);
        var report = await GetJsonAsync(proxy.Admin, "/api/v1/upstreams");
        Assert.True(report.TryGetProperty("now", out _));
        var group = report.GetProperty("groups")[0];
        Assert.Equal("g", group.GetProperty("name").GetString());
        Assert.True(group.GetProperty("available").GetBoolean());
        var members = group.GetProperty("upstreams").EnumerateArray().ToDictionary(u => u.GetProperty("name").GetString()!);
        var ua = members["a"];
        Assert.Equal("closed", ua.GetProperty("state").GetString());
        Assert.Equal(2, ua.GetProperty("priority").GetInt32());
        Assert.Equal(0, members["b"].GetProperty("priority").GetInt32());
        Assert.Equal(5, ua.GetProperty("lastMinute").GetProperty("requests").GetInt64());
        Assert.Equal(tokens, ua.GetProperty("lastMinute").GetProperty("tokens").GetInt64());
        Assert.Equal(0, members["b"].GetProperty("lastMinute").GetProperty("requests").GetInt64());
        var budgets = ua.GetProperty("budgets");
        Assert.Equal(600, budgets.GetProperty("requestsPerMinute").GetProperty("limit").GetInt64());
        Assert.Equal(5, budgets.GetProperty("requestsPerMinute").GetProperty("used").GetInt64());
        Assert.Equal(100000, budgets.GetProperty("tokensPerMinute").GetProperty("limit").GetInt64());
        Assert.Equal(tokens, budgets.GetProperty("tokensPerMinute").GetProperty("used").GetInt64());
        Assert.Equal(4, budgets.GetProperty("concurrent").GetProperty("limit").GetInt64());
        Assert.Equal("closed", ua.GetProperty("breaker").GetProperty("state").GetString());
        Assert.Equal(5, ua.GetProperty("breaker").GetProperty("windowRequests").GetInt32());
        Assert.Equal(JsonValueKind.Null, members["b"].GetProperty("breaker").ValueKind);
        Assert.Equal(JsonValueKind.Null, ua.GetProperty("lastError").ValueKind);
        Assert.Equal(JsonValueKind.Null, ua.GetProperty("disabled").ValueKind);
        Assert.DoesNotContain("secret-key", report.GetRawText());
    }

    [Fact]
    public async Task Upstreams_LastErrorAndCoolDownAndLearnedHeadroom_ThenResetClearsThem()
    {
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow); // nothing expires while the test looks
        // a: its 500s open the breaker; b: a 429 with the provider's headroom headers parks it. Neither retries elsewhere.
        await using var a = await MockServer.StartAsync(new MockOptions { Port = 0, Name = "a", Status = 500 });
        await using var b = await MockServer.StartAsync(new MockOptions { Port = 0, Name = "b" });
        var breaker = "  breaker:\n    threshold: 0.5\n    minRequests: 1\n    cooldown: 600000";
        var yaml = TestProxy.Config(Upstream("a", a.BaseUrl.ToString().TrimEnd('/'), breaker) + "\n" + Upstream("b", b.BaseUrl.ToString().TrimEnd('/'), breaker),
            "- name: a\n  priority: 1\n- name: b", groupExtra: "retry:\n  attempts: 1");
        await using var proxy = await TestProxy.StartAsync(yaml, time);

        using (var r = await proxy.Client.SendAsync(ReliabilityKit.Chat()))
        {
            Assert.Equal(HttpStatusCode.InternalServerError, r.StatusCode);
        }
        using (var limited = ReliabilityKit.Chat())
        {
            limited.Headers.Add("X-Mock-Status", "429");
            limited.Headers.Add("X-Mock-Ratelimit-Remaining-Tokens", "0");
            limited.Headers.Add("X-Mock-Ratelimit-Reset-Tokens", "6m0s");
            using var r = await proxy.Client.SendAsync(limited);
            Assert.Equal(HttpStatusCode.TooManyRequests, r.StatusCode);
            Assert.Equal("b", r.Via());
        }

        var members = await MembersWhenAsync(proxy.Admin, m => Has(m["a"], "lastError") && Has(m["b"], "lastError") && Has(m["b"], "learned"));
        Assert.Equal("open", members["a"].GetProperty("state").GetString());
        Assert.Equal("status_5xx", members["a"].GetProperty("lastError").GetProperty("kind").GetString());
        Assert.Equal(500, members["a"].GetProperty("lastError").GetProperty("status").GetInt32());
        Assert.NotEqual(JsonValueKind.Null, members["a"].GetProperty("breaker").GetProperty("halfOpenAt").ValueKind);
        Assert.Equal("cooling", members["b"].GetProperty("state").GetString());
        Assert.Equal("status_429", members["b"].GetProperty("lastError").GetProperty("kind").GetString());
        Assert.NotEqual(JsonValueKind.Null, members["b"].GetProperty("coolingUntil").ValueKind);
        Assert.Equal(0, members["b"].GetProperty("learned").GetProperty("remainingTokens").GetInt64());

        var resetA = await ActAsync(proxy.Admin, "a", "reset");
        Assert.Equal("closed", resetA.GetProperty("state").GetString());
        Assert.Equal(JsonValueKind.Null, resetA.GetProperty("breaker").GetProperty("halfOpenAt").ValueKind);
        var resetB = await ActAsync(proxy.Admin, "b", "reset");
        Assert.Equal("closed", resetB.GetProperty("state").GetString());
        Assert.Equal(JsonValueKind.Null, resetB.GetProperty("coolingUntil").ValueKind);
        Assert.Equal(JsonValueKind.Null, resetB.GetProperty("learned").ValueKind);
        Assert.True(resetB.GetProperty("available").GetBoolean());

        var metrics = await proxy.Admin.GetStringAsync("/metrics");
        AssertSample(metrics, "llmproxy_admin_actions_total{action=\"reset\",result=\"ok\"}", 2);
        AssertSample(metrics, "llmproxy_circuit_breaker_state{upstream=\"a\"}", 0);
        // a takes traffic again at once (its upstream still answers 500; a is preferred by priority).
        using var served = await proxy.Client.SendAsync(ReliabilityKit.Chat());
        Assert.Equal("a", served.Via());
    }

    [Fact]
    public async Task Disable_TakesKeyOutWithReasonAdmin_NeverRechecked_EnableBringsItBack_LoggedAndCounted()
    {
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var a = await MockServer.StartAsync(new MockOptions { Port = 0, Name = "a" });
        await using var b = await MockServer.StartAsync(new MockOptions { Port = 0, Name = "b" });
        var yaml = TestProxy.Config(Upstream("a", a.BaseUrl.ToString().TrimEnd('/'), "  recheck: 1000") + "\n" + Upstream("b", b.BaseUrl.ToString().TrimEnd('/')),
            "- name: a\n  priority: 1\n- name: b");
        await using var proxy = await TestProxy.StartAsync(yaml, time);

        var disabled = await ActAsync(proxy.Admin, "a", "disable");
        Assert.Equal("disabled", disabled.GetProperty("state").GetString());
        Assert.Equal("admin", disabled.GetProperty("disabled").GetProperty("reason").GetString());
        Assert.Equal(JsonValueKind.Null, disabled.GetProperty("disabled").GetProperty("nextTrial").ValueKind);

        // Far past a's recheck: key health would let a trial through; the operator's disable lets none.
        for (var i = 0; i < 3; i++)
        {
            time.Advance(TimeSpan.FromSeconds(10));
            using var r = await proxy.Client.SendAsync(ReliabilityKit.Chat());
            Assert.Equal(HttpStatusCode.OK, r.StatusCode);
            Assert.Equal("b", r.Via());
        }
        Assert.Equal("disabled", (await MembersAsync(proxy.Admin))["a"].GetProperty("state").GetString());

        var enabled = await ActAsync(proxy.Admin, "a", "enable");
        Assert.Equal("closed", enabled.GetProperty("state").GetString());
        Assert.Equal(JsonValueKind.Null, enabled.GetProperty("disabled").ValueKind);
        using (var r = await proxy.Client.SendAsync(ReliabilityKit.Chat()))
        {
            Assert.Equal("a", r.Via());
        }

        var metrics = await proxy.Admin.GetStringAsync("/metrics");
        AssertSample(metrics, "llmproxy_admin_actions_total{action=\"disable\",result=\"ok\"}", 1);
        AssertSample(metrics, "llmproxy_admin_actions_total{action=\"enable\",result=\"ok\"}", 1);
        var lines = proxy.Logs.Entries.Where(e => e.Id.Name == "AdminAction").Select(e => e.Message).ToList();
        Assert.Equal(2, lines.Count);
        Assert.Contains(lines, l => l.Contains("admin disable a by 127.0.0.1", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.Contains("admin enable a by 127.0.0.1", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Enable_ClearsKeyHealthDisable_OfARevokedKey()
    {
        await using var revoked = await MockServer.StartAsync(new MockOptions { Port = 0, Name = "revoked", Status = 401 });
        await using var b = await MockServer.StartAsync(new MockOptions { Port = 0, Name = "b" });
        var yaml = TestProxy.Config(Upstream("revoked", revoked.BaseUrl.ToString().TrimEnd('/')) + "\n" + Upstream("b", b.BaseUrl.ToString().TrimEnd('/')),
            "- name: revoked\n  priority: 1\n- name: b");
        await using var proxy = await TestProxy.StartAsync(yaml);

        using (var r = await proxy.Client.SendAsync(ReliabilityKit.Chat()))
        {
            Assert.Equal("b", r.Via()); // failed over off the revoked key
        }
        var before = (await MembersWhenAsync(proxy.Admin, m => Has(m["revoked"], "lastError")))["revoked"];
        Assert.Equal("disabled", before.GetProperty("state").GetString());
        Assert.Equal("status_401", before.GetProperty("disabled").GetProperty("reason").GetString());
        Assert.Equal("bad_key", before.GetProperty("lastError").GetProperty("kind").GetString());

        var enabled = await ActAsync(proxy.Admin, "revoked", "enable");
        Assert.Equal("closed", enabled.GetProperty("state").GetString());
        Assert.True(enabled.GetProperty("available").GetBoolean());
        Assert.Equal(1L, revoked.RequestCount);
        using (var r = await proxy.Client.SendAsync(ReliabilityKit.Chat()))
        {
            Assert.Equal("b", r.Via()); // tried again at once (and disabled again: its key is still revoked)
        }
        Assert.Equal(2L, revoked.RequestCount);
    }

    [Fact]
    public async Task Errors_UnknownUpstream404_WrongMethod405_UnknownPath404_AllOneJsonBody()
    {
        await using var a = await MockServer.StartAsync(new MockOptions { Port = 0, Name = "a" });
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(Upstream("a", a.BaseUrl.ToString().TrimEnd('/')), "- name: a"));

        using (var r = await proxy.Admin.PostAsync("/api/v1/upstreams/nope/disable", null))
        {
            await StreamingAndErrorTests.AssertErrorBody(r, HttpStatusCode.NotFound, "upstream_not_found");
        }
        using (var r = await proxy.Admin.GetAsync("/api/v1/upstreams/a/disable"))
        {
            await StreamingAndErrorTests.AssertErrorBody(r, HttpStatusCode.MethodNotAllowed, "method_not_allowed");
            Assert.Contains("POST", r.Content.Headers.Allow);
        }
        using (var r = await proxy.Admin.DeleteAsync("/api/v1/upstreams"))
        {
            await StreamingAndErrorTests.AssertErrorBody(r, HttpStatusCode.MethodNotAllowed, "method_not_allowed");
        }
        using (var r = await proxy.Admin.PostAsync("/api/v1/upstreams/a/explode", null))
        {
            await StreamingAndErrorTests.AssertErrorBody(r, HttpStatusCode.NotFound, "not_found");
        }
        using (var r = await proxy.Admin.GetAsync("/api/v1/upstreams/a"))
        {
            await StreamingAndErrorTests.AssertErrorBody(r, HttpStatusCode.NotFound, "not_found");
        }
        var metrics = await proxy.Admin.GetStringAsync("/metrics");
        AssertSample(metrics, "llmproxy_admin_actions_total{action=\"disable\",result=\"not_found\"}", 1);
        Assert.Equal(JsonValueKind.Null, (await MembersAsync(proxy.Admin))["a"].GetProperty("disabled").ValueKind);
    }

    [Fact]
    public async Task Token_GuardsEveryApi_PagePingMetricsStayOpen_RefusalsCountedNotApplied()
    {
        await using var a = await MockServer.StartAsync(new MockOptions { Port = 0, Name = "a" });
        var yaml = TestProxy.Config(Upstream("a", a.BaseUrl.ToString().TrimEnd('/')), "- name: a", adminExtra: $"token: \"{AdminToken}\"");
        await using var proxy = await TestProxy.StartAsync(yaml, reloadYaml: () => yaml);

        foreach (var (method, path) in new[]
        {
            (HttpMethod.Get, "/api/v1/upstreams"), (HttpMethod.Get, "/api/v1/config"), (HttpMethod.Get, "/health"),
            (HttpMethod.Post, "/api/v1/upstreams/a/disable"), (HttpMethod.Post, "/api/v1/upstreams/a/reset"), (HttpMethod.Post, "/api/v1/reload"),
        })
        {
            using var anonymous = await proxy.Admin.SendAsync(new HttpRequestMessage(method, path));
            await StreamingAndErrorTests.AssertErrorBody(anonymous, HttpStatusCode.Unauthorized, "unauthorized");
            using var wrong = new HttpRequestMessage(method, path);
            wrong.Headers.Authorization = new AuthenticationHeaderValue("Bearer", AdminToken + "x");
            using var refused = await proxy.Admin.SendAsync(wrong);
            Assert.Equal(HttpStatusCode.Unauthorized, refused.StatusCode);
        }
        // The refused disable changed nothing.
        var members = await MembersAsync(proxy.Admin, AdminToken);
        Assert.Equal("closed", members["a"].GetProperty("state").GetString());

        using (var page = await proxy.Admin.GetAsync("/"))
        {
            Assert.Equal(HttpStatusCode.OK, page.StatusCode);
            Assert.Equal("text/html", page.Content.Headers.ContentType?.MediaType);
        }
        Assert.Equal(HttpStatusCode.OK, (await proxy.Admin.GetAsync("/ping")).StatusCode);
        var metrics = await proxy.Admin.GetStringAsync("/metrics");
        Assert.Equal(12, Sample(metrics, "llmproxy_admin_unauthorized_total"));
        Assert.DoesNotContain(AdminToken, proxy.Logs.AllText);
        Assert.Contains(proxy.Logs.Entries, e => e.Id.Name == "AdminUnauthorized");
    }

    [Fact]
    public async Task Token_ReadLikeAClientKey_OneBearerParserForBoth()
    {
        // The admin token and client keys share one reading of Authorization (Forwarding/BearerToken): the scheme in
        // any case and spaces before the token, nothing else.
        await using var a = await MockServer.StartAsync(new MockOptions { Port = 0, Name = "a" });
        var yaml = TestProxy.Config(Upstream("a", a.BaseUrl.ToString().TrimEnd('/')), "- name: a", adminExtra: $"token: \"{AdminToken}\"");
        await using var proxy = await TestProxy.StartAsync(yaml);
        foreach (var (value, expected) in new[]
        {
            ($"bearer {AdminToken}", HttpStatusCode.OK), ($"BEARER    {AdminToken}", HttpStatusCode.OK),
            ($"Bearer\t{AdminToken}", HttpStatusCode.Unauthorized), ($"Bearer \t{AdminToken}", HttpStatusCode.Unauthorized),
            ($"Basic {AdminToken}", HttpStatusCode.Unauthorized), ("Bearer", HttpStatusCode.Unauthorized),
            ($"Bearer {AdminToken}, Bearer {AdminToken}", HttpStatusCode.Unauthorized), ($"{AdminToken}", HttpStatusCode.Unauthorized),
        })
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, "/api/v1/upstreams");
            Assert.True(request.Headers.TryAddWithoutValidation("Authorization", value));
            using var response = await proxy.Admin.SendAsync(request);
            Assert.True(expected == response.StatusCode, $"Authorization: {value.Replace(AdminToken, "<token>", StringComparison.Ordinal)} → {response.StatusCode}");
        }
    }

    /// <summary>An admin token no request can present — whitespace at either end, which the Authorization reading trims
    /// (and HTTP drops around a header value) — locked the operator out of every admin API with 401 while the config was
    /// accepted. It is a config error, named by its path, that does not echo the token.</summary>
    [Theory]
    [InlineData(" leading-space-admin-token")]
    [InlineData("trailing-space-admin-token ")]
    [InlineData("trailing-tab-admin-token\t")]
    public async Task Token_ThatNoRequestCanPresent_IsAConfigError_NotALockout(string token)
    {
        await using var a = await MockServer.StartAsync(new MockOptions { Port = 0, Name = "a" });
        var yaml = TestProxy.Config(Upstream("a", a.BaseUrl.ToString().TrimEnd('/')), "- name: a", adminExtra: $"token: \"{token}\"");
        var result = LLMProxy.Configuration.ConfigLoader.LoadYaml(yaml);
        if (result.Success)
        {
            // What an operator meets: the token exactly as configured, on the wire as UTF-8, is refused.
            await using var proxy = await TestProxy.StartAsync(yaml);
            using var tcp = new System.Net.Sockets.TcpClient();
            await tcp.ConnectAsync(IPAddress.Loopback, proxy.AdminPort);
            var stream = tcp.GetStream();
            await stream.WriteAsync(System.Text.Encoding.UTF8.GetBytes(
                $"GET /api/v1/upstreams HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"));
            var status = (await new StreamReader(stream).ReadLineAsync())!;
            Assert.Fail($"admin.token accepted, but presenting it exactly is answered {status}");
        }
        var error = Assert.Single(result.Errors);
        Assert.Equal("httpServer.admin.token", error.Path);
        Assert.DoesNotContain(token.Trim(), error.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Actions_WithoutToken_ThroughAHostName_RefusedAgainstDnsRebinding()
    {
        // A page on evil.example whose name was re-pointed at 127.0.0.1 sends Origin and Host of evil.example: the
        // cross-origin check cannot tell, the Host can. Without a token, actions need an IP address or localhost.
        await using var a = await MockServer.StartAsync(new MockOptions { Port = 0, Name = "a" });
        var upstream = Upstream("a", a.BaseUrl.ToString().TrimEnd('/'));
        await using (var open = await TestProxy.StartAsync(TestProxy.Config(upstream, "- name: a")))
        {
            var port = open.Admin.BaseAddress!.Port;
            foreach (var (host, expected) in new[]
            {
                ($"evil.example:{port}", HttpStatusCode.Forbidden), ($"127.0.0.1.nip.io:{port}", HttpStatusCode.Forbidden),
                ($"127.0.0.1:{port}", HttpStatusCode.OK), ($"localhost:{port}", HttpStatusCode.OK), ($"[::1]:{port}", HttpStatusCode.OK),
            })
            {
                using var request = new HttpRequestMessage(HttpMethod.Post, "/api/v1/upstreams/a/reset");
                request.Headers.Host = host;
                request.Headers.TryAddWithoutValidation("Origin", $"http://{host}");
                using var response = await open.Admin.SendAsync(request);
                Assert.True(expected == response.StatusCode, $"Host {host} → {response.StatusCode}");
                if (expected == HttpStatusCode.Forbidden)
                {
                    await StreamingAndErrorTests.AssertErrorBody(response, HttpStatusCode.Forbidden, "forbidden");
                }
            }
            // Reads stay open to names (probes and dashboards use them; the data is redacted).
            using var read = new HttpRequestMessage(HttpMethod.Get, "/api/v1/upstreams");
            read.Headers.Host = "evil.example";
            Assert.Equal(HttpStatusCode.OK, (await open.Admin.SendAsync(read)).StatusCode);
        }

        // With a token the token is the guard: the same name is fine.
        await using var guarded = await TestProxy.StartAsync(TestProxy.Config(upstream, "- name: a", adminExtra: $"token: \"{AdminToken}\""));
        using var withToken = new HttpRequestMessage(HttpMethod.Post, "/api/v1/upstreams/a/reset");
        withToken.Headers.Host = "evil.example";
        withToken.Headers.Authorization = new AuthenticationHeaderValue("Bearer", AdminToken);
        Assert.Equal(HttpStatusCode.OK, (await guarded.Admin.SendAsync(withToken)).StatusCode);
    }

    [Fact]
    public async Task Actions_FromAnotherSitesPage_RefusedAsCsrf_SameOriginAndNoOriginAccepted()
    {
        await using var a = await MockServer.StartAsync(new MockOptions { Port = 0, Name = "a" });
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(Upstream("a", a.BaseUrl.ToString().TrimEnd('/')), "- name: a"));

        using (var evil = new HttpRequestMessage(HttpMethod.Post, "/api/v1/upstreams/a/disable"))
        {
            evil.Headers.Add("Origin", "https://evil.example");
            using var refused = await proxy.Admin.SendAsync(evil);
            await StreamingAndErrorTests.AssertErrorBody(refused, HttpStatusCode.Forbidden, "forbidden");
        }
        using (var nullOrigin = new HttpRequestMessage(HttpMethod.Post, "/api/v1/upstreams/a/disable"))
        {
            nullOrigin.Headers.Add("Origin", "null"); // a sandboxed frame or a file:// page
            Assert.Equal(HttpStatusCode.Forbidden, (await proxy.Admin.SendAsync(nullOrigin)).StatusCode);
        }
        Assert.Equal(JsonValueKind.Null, (await MembersAsync(proxy.Admin))["a"].GetProperty("disabled").ValueKind);

        using (var page = new HttpRequestMessage(HttpMethod.Post, "/api/v1/upstreams/a/disable"))
        {
            page.Headers.Add("Origin", $"http://127.0.0.1:{proxy.AdminPort}");
            Assert.Equal(HttpStatusCode.OK, (await proxy.Admin.SendAsync(page)).StatusCode);
        }
        Assert.Equal("disabled", (await ActAsync(proxy.Admin, "a", "disable")).GetProperty("state").GetString());
    }

    /// <summary>
    /// With <c>admin.token</c> set the token is the guard against another site's page, as against DNS rebinding: a
    /// browser never attaches it by itself, so a page that sends it is the operator's. Behind a TLS-terminating reverse
    /// proxy (the page at https://admin.example, Kestrel seeing http and the proxy's Host) the page's own Origin never
    /// equals what the listener sees, and every button of the status page was refused 403 while its reads worked.
    /// </summary>
    [Fact]
    public async Task Actions_WithAdminToken_BehindAReverseProxy_PageOriginAccepted_TokenStillRequired()
    {
        await using var a = await MockServer.StartAsync(new MockOptions { Port = 0, Name = "a" });
        var yaml = TestProxy.Config(Upstream("a", a.BaseUrl.ToString().TrimEnd('/')), "- name: a", adminExtra: $"token: \"{AdminToken}\"");
        await using var proxy = await TestProxy.StartAsync(yaml);

        HttpRequestMessage FromThePage(string action, string? token)
        {
            var request = new HttpRequestMessage(HttpMethod.Post, "/api/v1/upstreams/a/" + action);
            request.Headers.Add("Origin", "https://admin.example"); // what the operator's browser shows
            if (token is not null)
            {
                request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
            }
            return request;
        }

        // The operator's click, with the token: it acts.
        using (var request = FromThePage("disable", AdminToken))
        {
            using var response = await proxy.Admin.SendAsync(request);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }
        Assert.Equal("admin", (await MembersAsync(proxy.Admin, AdminToken))["a"].GetProperty("disabled").GetProperty("reason").GetString());

        // Without the token (another site's page cannot have it): refused, nothing applied.
        using (var request = FromThePage("enable", null))
        {
            using var refused = await proxy.Admin.SendAsync(request);
            await StreamingAndErrorTests.AssertErrorBody(refused, HttpStatusCode.Unauthorized, "unauthorized");
        }
        Assert.Equal("admin", (await MembersAsync(proxy.Admin, AdminToken))["a"].GetProperty("disabled").GetProperty("reason").GetString());
    }

    [Fact]
    public async Task StatusPage_SelfContained_StrictHeaders_PolicyHashesMatchItsInlineScriptAndStyle()
    {
        await using var a = await MockServer.StartAsync(new MockOptions { Port = 0, Name = "a" });
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(Upstream("a", a.BaseUrl.ToString().TrimEnd('/')), "- name: a"));

        using var page = await proxy.Admin.GetAsync("/");
        var html = await page.Content.ReadAsStringAsync();
        var csp = string.Join(' ', page.Headers.GetValues("Content-Security-Policy"));
        Assert.Contains("default-src 'none'", csp);
        Assert.Contains("connect-src 'self'", csp);
        Assert.DoesNotContain("unsafe-inline", csp);
        Assert.DoesNotContain("http", csp);
        Assert.Equal("nosniff", string.Join(',', page.Headers.GetValues("X-Content-Type-Options")));
        Assert.Contains("no-store", page.Headers.CacheControl!.ToString());
        Assert.Contains("name=\"viewport\"", html);
        // Nothing external: no src/href to anything, and no inline markup sink for data.
        Assert.DoesNotContain("src=", html);
        Assert.DoesNotContain("href=", html);
        Assert.DoesNotContain("innerHTML", html);
        Assert.DoesNotContain("localStorage", html);
        Assert.DoesNotContain("sessionStorage", html);
        Assert.DoesNotContain("document.cookie", html);
        foreach (var tag in new[] { "script", "style" })
        {
            var start = html.IndexOf($"<{tag}>", StringComparison.Ordinal) + tag.Length + 2;
            var content = html[start..html.IndexOf($"</{tag}>", StringComparison.Ordinal)];
            var hash = Convert.ToBase64String(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(content)));
            Assert.Contains($"'sha256-{hash}'", csp);
        }
    }

    [Fact]
    public async Task Config_IsRedacted_NoKeyTokenPasswordUserInfoOrQueryValue()
    {
        await using var a = await MockServer.StartAsync(new MockOptions { Port = 0, Name = "a" });
        var url = a.BaseUrl.ToString().TrimEnd('/');
        var upstreams = $"""
            - name: bearer
              url: "{url}"
              auth:
                type: bearer
                token: "sk-bearer-secret-0001"
            - name: basic
              url: "http://urluser:urlpass-secret-0002@127.0.0.1:1/v1/sk-path-secret-0009abcdef/chat?api-key=query-secret-0003&mode=x"
              auth:
                type: basic
                username: "basic-user-secret-0004"
                password: "basic-pass-secret-0005"
              headers:
                - op: replace
                  key: x-api-key
                  value: "header-secret-0006"
            """;
        var yaml = TestProxy.Config(upstreams, "- name: bearer\n- name: basic",
            groupExtra: "httpClient:\n  proxy:\n    url: \"http://proxyuser:proxy-secret-0007@127.0.0.1:3128\"",
            adminExtra: "token: \"admin-secret-0008\"");
        await using var proxy = await TestProxy.StartAsync(yaml);

        using var anonymous = await proxy.Admin.GetAsync("/api/v1/config");
        Assert.Equal(HttpStatusCode.Unauthorized, anonymous.StatusCode);
        var config = await GetJsonAsync(proxy.Admin, "/api/v1/config", "admin-secret-0008");
        var text = config.GetRawText();
        Assert.DoesNotContain("secret-000", text);
        Assert.DoesNotContain("urluser", text);
        Assert.DoesNotContain("proxyuser", text);
        var basic = config.GetProperty("upstreams")[1];
        Assert.Equal("http://127.0.0.1:1/v1/[redacted]/chat?api-key=[redacted]&mode=[redacted]", basic.GetProperty("url").GetString());
        Assert.Equal("basic", basic.GetProperty("auth").GetProperty("type").GetString());
        Assert.Equal("[redacted]", basic.GetProperty("auth").GetProperty("password").GetString());
        Assert.Equal("x-api-key", basic.GetProperty("headers")[0].GetProperty("key").GetString());
        Assert.Equal("[redacted]", basic.GetProperty("headers")[0].GetProperty("value").GetString());
        Assert.Equal("http://127.0.0.1:3128/", config.GetProperty("upstreamGroups")[0].GetProperty("httpClient").GetProperty("proxy").GetProperty("url").GetString());
        Assert.Equal("[redacted]", config.GetProperty("httpServer").GetProperty("admin").GetProperty("token").GetString());
        // What is not secret is shown as the loader understood it, defaults included.
        Assert.Equal(url, config.GetProperty("upstreams")[0].GetProperty("url").GetString());
        Assert.Equal(3, config.GetProperty("upstreamGroups")[0].GetProperty("retry").GetProperty("attempts").GetInt32());
    }

    [Fact]
    public void ConfigRedaction_CoversClientKeysAndDigests_AndUnparseableUrls()
    {
        // The shape client keys (SPEC §15) and a Redis connection string take: covered by rule, not by a field list.
        var node = System.Text.Json.Nodes.JsonNode.Parse("""
            {"forwards":[{"keys":[{"name":"team_a","key":"ck-team-secret-1","sha256":"ab12cd34digest"}]}],
             "cluster":{"redis":{"url":"redis-host:6379,password=redis-secret-2","prefix":"llmproxy:"}},
             "other":{"apiKey":"k-secret-3","refreshToken":"t-secret-4"}}
            """)!;
        Admin_Redact(node);
        var text = node.ToJsonString();
        Assert.DoesNotContain("secret", text);
        Assert.DoesNotContain("digest", text);
        Assert.Contains("team_a", text);
        Assert.Contains("llmproxy:", text);
    }

    private static void Admin_Redact(System.Text.Json.Nodes.JsonNode node) => LLMProxy.Admin.ConfigReport.Redact(node);

    [Theory]
    // A key in the path (some gateways and webhook-style APIs take it there) is hidden, the rest of the path kept.
    [InlineData("https://gw.example.com/v1/sk-live-0123456789abcdef/chat", "https://gw.example.com/v1/[redacted]/chat")]
    [InlineData("https://gw.example.com/key/AIzaSyA1b2C3d4E5f6G7h8/x", "https://gw.example.com/key/[redacted]/x")]
    [InlineData("https://gw.example.com/hooks/9f86d081884c7d659a2feaa0c55ad015", "https://gw.example.com/hooks/[redacted]")]
    [InlineData("https://gw.example.com/t/3f2504e0-4f89-11d3-9a0c-0305e82c3301/v1", "https://gw.example.com/t/[redacted]/v1")]
    // An escaped key is recognised as the key it decodes to.
    [InlineData("https://gw.example.com/v1/sk%2Dlive%2D0123456789abcdef", "https://gw.example.com/v1/[redacted]")]
    // Ordinary paths stay as written: versions, deployments, model names with dates, file names.
    [InlineData("https://api.openai.com/v1", "https://api.openai.com/v1")]
    [InlineData("https://x.openai.azure.com/openai/deployments/gpt-4o-mini-2024-07-18/chat/completions",
        "https://x.openai.azure.com/openai/deployments/gpt-4o-mini-2024-07-18/chat/completions")]
    [InlineData("https://api.example.com/v1beta/models/gemini-1.5-pro-002:generateContent",
        "https://api.example.com/v1beta/models/gemini-1.5-pro-002:generateContent")]
    [InlineData("https://api.example.com/skills/sk-short", "https://api.example.com/skills/sk-short")]
    public void ConfigRedaction_HidesAKeyInTheUrlPath(string url, string shown) =>
        Assert.Equal(shown, LLMProxy.Admin.ConfigReport.SafeUrl(url));

    [Fact]
    public async Task DisableAndEnable_SurviveReload_OfUnchangedUpstream_ButNotOfChangedOne()
    {
        await using var a = await MockServer.StartAsync(new MockOptions { Port = 0, Name = "a" });
        await using var b = await MockServer.StartAsync(new MockOptions { Port = 0, Name = "b" });
        await using var c = await MockServer.StartAsync(new MockOptions { Port = 0, Name = "c" });
        string Yaml(string bExtra) => TestProxy.Config(
            Upstream("a", a.BaseUrl.ToString().TrimEnd('/')) + "\n" + Upstream("b", b.BaseUrl.ToString().TrimEnd('/'), bExtra)
            + "\n" + Upstream("c", c.BaseUrl.ToString().TrimEnd('/')),
            "- name: a\n- name: b\n- name: c");
        var current = Yaml("");
        await using var proxy = await TestProxy.StartAsync(current, reloadYaml: () => current);
        var runtimeA = proxy.Host.Runtime.Upstreams["a"];

        await ActAsync(proxy.Admin, "a", "disable");
        await ActAsync(proxy.Admin, "b", "disable");
        current = Yaml("  recheck: 5000"); // b's config changes, a's and c's do not
        using (var reload = await proxy.Admin.PostAsync("/api/v1/reload", null))
        {
            Assert.Equal(HttpStatusCode.OK, reload.StatusCode);
        }

        Assert.Same(runtimeA, proxy.Host.Runtime.Upstreams["a"]);
        var members = await MembersAsync(proxy.Admin);
        Assert.Equal("disabled", members["a"].GetProperty("state").GetString());
        Assert.Equal("admin", members["a"].GetProperty("disabled").GetProperty("reason").GetString());
        Assert.Equal("closed", members["b"].GetProperty("state").GetString());
        for (var i = 0; i < 4; i++)
        {
            using var r = await proxy.Client.SendAsync(ReliabilityKit.Chat());
            Assert.NotEqual("a", r.Via());
        }

        await ActAsync(proxy.Admin, "a", "enable");
        using (var reload = await proxy.Admin.PostAsync("/api/v1/reload", null))
        {
            Assert.Equal(HttpStatusCode.OK, reload.StatusCode);
        }
        Assert.Equal("closed", (await MembersAsync(proxy.Admin))["a"].GetProperty("state").GetString());
        AssertSample(await proxy.Admin.GetStringAsync("/metrics"), "llmproxy_admin_actions_total{action=\"reload\",result=\"ok\"}", 2);
    }

    [Fact]
    public async Task ActionOnUpstreamWithHostileName_FoundByEscapedName_EchoedOnlyAsJsonString()
    {
        await using var a = await MockServer.StartAsync(new MockOptions { Port = 0, Name = "a" });
        const string name = "<img src=x onerror=alert(1)>/\"k\"";
        var yaml = TestProxy.Config($"- name: '{name}'\n  url: \"{a.BaseUrl.ToString().TrimEnd('/')}\"", $"- name: '{name}'");
        await using var proxy = await TestProxy.StartAsync(yaml);

        var disabled = await ActAsync(proxy.Admin, name, "disable");
        Assert.Equal(name, disabled.GetProperty("name").GetString());
        Assert.Equal("disabled", disabled.GetProperty("state").GetString());
        using var r = await proxy.Admin.PostAsync("/api/v1/upstreams/" + Uri.EscapeDataString("<script>") + "/disable", null);
        await StreamingAndErrorTests.AssertErrorBody(r, HttpStatusCode.NotFound, "upstream_not_found");
        Assert.Equal("application/json", r.Content.Headers.ContentType?.MediaType);
    }

    [Fact]
    public async Task Action_NameWithSlash_AndNameWithLiteralPercent2F_EachReachedOnlyByItsOwnEscape()
    {
        // The server leaves %2F encoded but decodes %25: both escapes below reach routing as "a%2Fb".
        await using var a = await MockServer.StartAsync(new MockOptions { Port = 0, Name = "a" });
        var url = a.BaseUrl.ToString().TrimEnd('/');
        var yaml = TestProxy.Config($"- name: 'a/b'\n  url: \"{url}\"\n- name: 'a%2Fb'\n  url: \"{url}\"", "- name: 'a/b'\n- name: 'a%2Fb'");
        await using var proxy = await TestProxy.StartAsync(yaml);

        Assert.Equal("a/b", (await ActAsync(proxy.Admin, "a/b", "disable")).GetProperty("name").GetString());
        var members = await MembersAsync(proxy.Admin);
        Assert.Equal("disabled", members["a/b"].GetProperty("state").GetString());
        Assert.Equal("closed", members["a%2Fb"].GetProperty("state").GetString());

        Assert.Equal("a%2Fb", (await ActAsync(proxy.Admin, "a%2Fb", "disable")).GetProperty("name").GetString());
        Assert.Equal("a/b", (await ActAsync(proxy.Admin, "a/b", "enable")).GetProperty("name").GetString());
        members = await MembersAsync(proxy.Admin);
        Assert.Equal("closed", members["a/b"].GetProperty("state").GetString());
        Assert.Equal("disabled", members["a%2Fb"].GetProperty("state").GetString());
    }
}

internal static class ViaExtensions
{
    /// <summary>The upstream that served an answer, from the proxy's <c>X-LLMProxy-Upstream</c> debug header.</summary>
    public static string Via(this HttpResponseMessage response) =>
        response.Headers.TryGetValues("X-LLMProxy-Upstream", out var v) ? v.Single() : "(proxy)";
}
