using System.Net;
using LLMProxy.Forwarding;
using LLMProxy.Resilience;
using LLMProxy.Tests.Infrastructure;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Time.Testing;

namespace LLMProxy.Tests.Resilience;

/// <summary>SPEC §13.4 key health through the real pipeline (fake time).</summary>
public class KeyHealthPipelineTests
{
    private const string Auth = "auth:\n  type: bearer\n  token: sk-test";

    private static async Task<string> HealthAsync(TestProxy proxy) => await (await proxy.Admin.GetAsync("/health")).Content.ReadAsStringAsync();

    private static Func<HttpContext, Task> Error(int status, string body) => async ctx =>
    {
        ctx.Response.StatusCode = status;
        ctx.Response.ContentType = "application/json";
        await ctx.Response.WriteAsync(body);
    };

    [Fact]
    public async Task Key401_Disabled_FailsOver_NeverTriedAgain_UntilTrialSucceeds()
    {
        var bad = 1;
        await using var ups = await Upstreams.StartAsync(
            ("bad", ctx => Volatile.Read(ref bad) == 1
                ? Error(401, "{\"error\":{\"code\":\"invalid_api_key\"}}")(ctx)
                : ScriptedUpstream.Json("bad")(ctx)),
            ("good", ScriptedUpstream.Json("good")));
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(ups.Yaml(_ => Auth + "\nrecheck: 1000"), ups.Members()), time);

        for (var i = 0; i < 6; i++)
        {
            // 401 is not in retry.statusCodes, yet the bad key's answer is held back and the other key serves.
            using var r = await proxy.Client.GetAsync("/");
            Assert.Equal(HttpStatusCode.OK, r.StatusCode);
            Assert.Equal("good", r.UpstreamName());
        }
        Assert.Equal(1, ups["bad"].Count);
        var health = await HealthAsync(proxy);
        Assert.Contains("\"disabled\":{\"reason\":\"status_401\"", health);
        MetricsText.AssertSample(await proxy.Admin.GetStringAsync("/metrics"), "llmproxy_upstream_disabled{upstream=\"bad\"}", 1);
        MetricsText.AssertSample(await proxy.Admin.GetStringAsync("/metrics"), "llmproxy_upstream_disabled{upstream=\"good\"}", 0);
        var counted = await proxy.Admin.GetStringAsync("/metrics");
        MetricsText.AssertSample(counted, "llmproxy_upstream_errors_total{group=\"g\",upstream=\"bad\",error=\"bad_key\"}", 1);
        MetricsText.AssertSample(counted, "llmproxy_retries_total{group=\"g\",reason=\"bad_key\"}", 1);

        // Recheck due while the key is still bad: exactly one trial reaches it, fails over, and the wait restarts.
        time.Advance(TimeSpan.FromMilliseconds(1001));
        for (var i = 0; i < 4; i++)
        {
            using var r = await proxy.Client.GetAsync("/");
            Assert.Equal("good", r.UpstreamName());
        }
        Assert.Equal(2, ups["bad"].Count);
        time.Advance(TimeSpan.FromMilliseconds(500));
        for (var i = 0; i < 3; i++)
        {
            using var r = await proxy.Client.GetAsync("/");
            Assert.Equal("good", r.UpstreamName());
        }
        Assert.Equal(2, ups["bad"].Count);

        // The key is fixed: the next trial succeeds and the key is back in the rotation.
        Volatile.Write(ref bad, 0);
        time.Advance(TimeSpan.FromMilliseconds(501));
        var names = new List<string>();
        for (var i = 0; i < 4; i++)
        {
            using var r = await proxy.Client.GetAsync("/");
            Assert.Equal(HttpStatusCode.OK, r.StatusCode);
            names.Add(r.UpstreamName());
        }
        Assert.True(names.Count(n => n == "bad") >= 2, string.Join(",", names));
        Assert.DoesNotContain("\"reason\":", await HealthAsync(proxy));
        MetricsText.AssertSample(await proxy.Admin.GetStringAsync("/metrics"), "llmproxy_upstream_disabled{upstream=\"bad\"}", 0);
    }

    [Fact]
    public async Task QuotaBody429_Disables_PlainRateLimit429_OnlyCoolsDown()
    {
        await using var ups = await Upstreams.StartAsync(
            ("quota", Error(429, "{\"error\":{\"message\":\"You exceeded your current quota\",\"type\":\"insufficient_quota\",\"code\":\"insufficient_quota\"}}")),
            ("limited", async ctx =>
            {
                ctx.Response.Headers.RetryAfter = "5";
                await Error(429, "{\"error\":{\"message\":\"Rate limit reached\",\"type\":\"requests\",\"code\":\"rate_limit_exceeded\"}}")(ctx);
            }),
            ("good", ScriptedUpstream.Json("good")));
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(ups.Yaml(_ => Auth), ups.Members(), groupExtra: "retry:\n  attempts: 3"), time);

        for (var i = 0; i < 6; i++)
        {
            using var r = await proxy.Client.GetAsync("/");
            Assert.Equal(HttpStatusCode.OK, r.StatusCode);
            Assert.Equal("good", r.UpstreamName());
        }
        var health = await HealthAsync(proxy);
        Assert.Contains("\"name\":\"quota\",\"host\":", health);
        Assert.Contains("\"reason\":\"insufficient_quota\"", health);
        // One key disabled, the rate-limited one only parked.
        Assert.Equal(1, health.Split("\"reason\":").Length - 1);
        Assert.Contains("\"coolingUntil\":\"", health);
        var metrics = await proxy.Admin.GetStringAsync("/metrics");
        MetricsText.AssertSample(metrics, "llmproxy_upstream_disabled{upstream=\"quota\"}", 1);
        MetricsText.AssertSample(metrics, "llmproxy_upstream_disabled{upstream=\"limited\"}", 0);
        MetricsText.AssertSample(metrics, "llmproxy_upstream_cooldowns_total{upstream=\"limited\"}", 1);

        // The cool-down ends and the rate-limited key is tried again; the quota key (recheck default 10 min) is not.
        time.Advance(TimeSpan.FromSeconds(6));
        for (var i = 0; i < 3; i++)
        {
            using var r = await proxy.Client.GetAsync("/");
            Assert.Equal("good", r.UpstreamName());
        }
        Assert.Equal(2, ups["limited"].Count);
        Assert.Equal(1, ups["quota"].Count);
    }

    [Fact]
    public async Task WithoutInjectedCredentials_401_IsTheClientsProblem_NotDisabled()
    {
        await using var ups = await Upstreams.StartAsync(("a", Error(401, "{\"error\":{\"code\":\"invalid_api_key\"}}")));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(ups.Yaml(), ups.Members()));

        for (var i = 0; i < 3; i++)
        {
            using var r = await proxy.Client.GetAsync("/");
            Assert.Equal(HttpStatusCode.Unauthorized, r.StatusCode);
            Assert.Contains("invalid_api_key", await r.Content.ReadAsStringAsync());
        }
        Assert.Equal(3, ups["a"].Count);
        Assert.Contains("\"disabled\":null", await HealthAsync(proxy));
        MetricsText.AssertSample(await proxy.Admin.GetStringAsync("/metrics"), "llmproxy_upstream_disabled{upstream=\"a\"}", 0);
    }

    /// <summary>An upstream that accepts only its own key, in whichever header the case puts it: anything else is a 401.</summary>
    private static Func<HttpContext, Task> AcceptsOnly(string name, string header, string key) => ctx =>
        ctx.Request.Headers[header].ToString() == key
        && ctx.Request.Headers.Authorization.Count + ctx.Request.Headers["x-api-key"].Count + ctx.Request.Headers["api-key"].Count == 1
            ? ScriptedUpstream.Json(name)(ctx)
            : Error(401, "{\"error\":{\"code\":\"invalid_api_key\"}}")(ctx);

    [Theory]
    // An insert op yields to the client's own header: the client's key went upstream, not the proxy's.
    [InlineData("headers:\n  - op: insert\n    key: Authorization\n    value: \"Bearer sk-own-1\"", "Authorization", "Bearer sk-own-1", "Authorization", "Bearer sk-client-junk")]
    [InlineData("headers:\n  - op: insert\n    key: x-api-key\n    value: sk-own-1", "x-api-key", "sk-own-1", "x-api-key", "sk-client-junk")]
    // The proxy sets one credential header, the client sends another beside it: the upstream may read either.
    [InlineData("auth:\n  type: bearer\n  token: sk-own-1", "Authorization", "Bearer sk-own-1", "x-api-key", "sk-client-junk")]
    [InlineData("headers:\n  - op: replace\n    key: x-api-key\n    value: sk-own-1", "x-api-key", "sk-own-1", "Authorization", "Bearer sk-client-junk")]
    public async Task ClientsOwnCredential_SentUpstream_Its401_NeverDisablesTheProxysKeys(
        string own, string ownHeader, string ownValue, string clientHeader, string clientValue)
    {
        await using var ups = await Upstreams.StartAsync(("k1", AcceptsOnly("k1", ownHeader, ownValue)), ("k2", AcceptsOnly("k2", ownHeader, ownValue)));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(ups.Yaml(_ => own), ups.Members()));

        for (var i = 0; i < 4; i++)
        {
            using var hostile = new HttpRequestMessage(HttpMethod.Get, "/v1/models");
            hostile.Headers.TryAddWithoutValidation(clientHeader, clientValue);
            using var r = await proxy.Client.SendAsync(hostile);
            Assert.Equal(HttpStatusCode.Unauthorized, r.StatusCode); // the client's problem, passed on as the upstream said it
            Assert.Equal("1", r.Headers.GetValues(UpstreamTransformer.DebugAttemptsHeader).Single()); // not failed over
        }
        var health = await HealthAsync(proxy);
        Assert.DoesNotContain("\"reason\":", health);
        for (var i = 0; i < 4; i++)
        {
            using var r = await proxy.Client.GetAsync("/v1/models");
            Assert.Equal(HttpStatusCode.OK, r.StatusCode); // both keys still serve everyone else
        }
        Assert.Equal(8, ups["k1"].Count + ups["k2"].Count); // one attempt per request, hostile or not
    }

    /// <summary>The OpenAI SDKs send <c>OpenAI-Organization</c> / <c>OpenAI-Project</c> from the client's environment; beside the
    /// proxy's key they pick an account the key may not belong to, and OpenAI answers 401 <c>mismatched_organization</c>
    /// (or <c>mismatched_project</c>). That answer is about the client's header, not the key: passed on, and no key is
    /// disabled — any client could otherwise take every key of a group out with one request each.</summary>
    [Theory]
    [InlineData("OpenAI-Organization", "mismatched_organization")]
    [InlineData("OpenAI-Project", "mismatched_project")]
    public async Task ClientsOrganizationOrProject_Its401_NeverDisablesTheProxysKeys(string header, string code)
    {
        Func<HttpContext, Task> account(string name) => ctx => ctx.Request.Headers[header].Count == 0
            ? ScriptedUpstream.Json(name)(ctx)
            : Error(401, "{\"error\":{\"message\":\"" + header + " header should match the API key\",\"type\":\"invalid_request_error\",\"param\":null,\"code\":\"" + code + "\"}}")(ctx);
        await using var ups = await Upstreams.StartAsync(("k1", account("k1")), ("k2", account("k2")));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(ups.Yaml(_ => Auth), ups.Members()));

        for (var i = 0; i < 4; i++)
        {
            using var sdk = new HttpRequestMessage(HttpMethod.Get, "/v1/models");
            sdk.Headers.TryAddWithoutValidation(header, "org-or-proj-of-the-client");
            using var r = await proxy.Client.SendAsync(sdk);
            Assert.Equal(HttpStatusCode.Unauthorized, r.StatusCode);
            Assert.Contains(code, await r.Content.ReadAsStringAsync());
            Assert.Equal("1", r.Headers.GetValues(UpstreamTransformer.DebugAttemptsHeader).Single()); // not failed over
        }
        Assert.DoesNotContain("\"reason\":", await HealthAsync(proxy));
        for (var i = 0; i < 4; i++)
        {
            using var r = await proxy.Client.GetAsync("/v1/models");
            Assert.Equal(HttpStatusCode.OK, r.StatusCode); // both keys still serve everyone else
        }
        Assert.Equal(8, ups["k1"].Count + ups["k2"].Count);
    }

    /// <summary>OpenAI answers 403 <c>model_not_found</c> when the key's project may not use the model the client named.
    /// The key serves every other model: it is not disabled, and the answer reaches the client as sent — else any
    /// client could take every key of a group out for <c>recheck</c> by naming such a model once per key. Any other
    /// 403 still disables.</summary>
    [Fact]
    public async Task Forbidden403_ModelTheProjectMayNotUse_KeyStaysEnabled_OtherReasonsStillDisable()
    {
        const string NoAccess = """{"error":{"message":"Project `proj_abc` does not have access to model `o1-pro`","type":"invalid_request_error","param":null,"code":"model_not_found"}}""";
        Upstreams? all = null;
        Func<HttpContext, Task> account(string name) => ctx =>
            (System.Text.Encoding.UTF8.GetString(all![name].Received.Last().Body).Contains("o1-pro", StringComparison.Ordinal)
                ? Error(403, NoAccess) : ScriptedUpstream.Json(name))(ctx);
        await using var ups = await Upstreams.StartAsync(("k1", account("k1")), ("k2", account("k2")),
            ("k3", Error(403, "{\"error\":{\"code\":\"unsupported_country_region_territory\"}}")));
        all = ups;
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(ups.Yaml(_ => Auth), ups.Members(), groupExtra: "balance:\n  strategy: roundrobin"));

        HttpRequestMessage Chat(string model) => new(HttpMethod.Post, "/v1/chat/completions")
        {
            Content = new StringContent("{\"model\":\"" + model + "\",\"messages\":[]}", System.Text.Encoding.UTF8, "application/json"),
        };
        for (var i = 0; i < 4; i++)
        {
            using var r = await proxy.Client.SendAsync(Chat("o1-pro"));
            Assert.Equal(HttpStatusCode.Forbidden, r.StatusCode);
            Assert.Equal(NoAccess, await r.Content.ReadAsStringAsync()); // as the upstream sent it
        }
        var health = await HealthAsync(proxy);
        Assert.Equal(1, health.Split("\"reason\":\"status_403\"").Length - 1); // k3 alone: its 403 says nothing of a model
        for (var i = 0; i < 4; i++)
        {
            using var r = await proxy.Client.SendAsync(Chat("gpt-4o"));
            Assert.Equal(HttpStatusCode.OK, r.StatusCode); // k1 and k2 still serve everyone else
        }
    }

    /// <summary>An organization or project the proxy itself sets (a header op) is part of its own credentials: a 401 then
    /// is about the proxy's key, which is disabled as before.</summary>
    [Fact]
    public async Task OrganizationSetByTheProxy_401_DisablesTheKey()
    {
        await using var ups = await Upstreams.StartAsync(
            ("bad", Error(401, "{\"error\":{\"code\":\"mismatched_organization\"}}")), ("good", ScriptedUpstream.Json("good")));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(
            ups.Yaml(_ => Auth + "\nheaders:\n  - op: replace\n    key: OpenAI-Organization\n    value: org-own"), ups.Members()));

        for (var i = 0; i < 3; i++)
        {
            using var sdk = new HttpRequestMessage(HttpMethod.Get, "/v1/models");
            sdk.Headers.TryAddWithoutValidation("OpenAI-Organization", "org-of-the-client"); // replaced by the proxy's
            using var r = await proxy.Client.SendAsync(sdk);
            Assert.Equal("good", r.UpstreamName());
        }
        Assert.Contains("\"disabled\":{\"reason\":\"status_401\"", await HealthAsync(proxy));
    }

    /// <summary>A disabled key's trial that carried a client's own key (an insert op yields to it) says nothing of the
    /// proxy's key: a client with a valid key of its own must not re-enable a bad one. The trial goes back unjudged and
    /// the next request without a client key takes it.</summary>
    [Fact]
    public async Task Trial_CarryingAClientsOwnKey_NeitherEnablesNorCountsAgainstTheKey()
    {
        await using var ups = await Upstreams.StartAsync(("k", AcceptsOnly("k", "x-api-key", "sk-client-valid")));
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(
            ups.Yaml(_ => "recheck: 1000\nheaders:\n  - op: insert\n    key: x-api-key\n    value: sk-own-bad"), ups.Members()), time);
        using (var first = await proxy.Client.GetAsync("/v1/models"))
        {
            Assert.Equal(HttpStatusCode.Unauthorized, first.StatusCode); // the proxy's key: disabled
        }
        Assert.Contains("\"reason\":\"status_401\"", await HealthAsync(proxy));
        time.Advance(TimeSpan.FromMilliseconds(1001));

        using (var withOwnKey = new HttpRequestMessage(HttpMethod.Get, "/v1/models"))
        {
            withOwnKey.Headers.TryAddWithoutValidation("x-api-key", "sk-client-valid");
            using var r = await proxy.Client.SendAsync(withOwnKey);
            Assert.Equal(HttpStatusCode.OK, r.StatusCode); // the client's key works
        }
        Assert.Contains("\"reason\":\"status_401\"", await HealthAsync(proxy)); // the proxy's key is still out

        using (var trial = await proxy.Client.GetAsync("/v1/models"))
        {
            Assert.Equal(HttpStatusCode.Unauthorized, trial.StatusCode); // the trial, handed back, judged the proxy's key
        }
        Assert.Equal(3, ups["k"].Count);
        Assert.Contains("\"reason\":\"status_401\"", await HealthAsync(proxy));
    }

    [Fact]
    public async Task InsertOp_ClientSentNoCredential_TheProxysKeyIsJudged_Disabled()
    {
        await using var ups = await Upstreams.StartAsync(
            ("bad", Error(401, "{\"error\":{\"code\":\"invalid_api_key\"}}")), ("good", ScriptedUpstream.Json("good")));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(
            ups.Yaml(_ => "headers:\n  - op: insert\n    key: x-api-key\n    value: sk-own-1"), ups.Members()));

        for (var i = 0; i < 3; i++)
        {
            using var r = await proxy.Client.GetAsync("/v1/models");
            Assert.Equal("good", r.UpstreamName());
        }
        Assert.Contains("\"disabled\":{\"reason\":\"status_401\"", await HealthAsync(proxy));
    }

    /// <summary>SPEC §4: the 503's Retry-After is the earliest moment a member may be available again. A member an
    /// operator disabled never comes back by itself, so it must not make that moment "now".</summary>
    [Fact]
    public async Task RetryAfter_LeavesOutMembersThatNeverRecoverByThemselves_NoneLeft_NoRetryAfter()
    {
        await using var ups = await Upstreams.StartAsync(("broken", ScriptedUpstream.Json("broken", 500)), ("off", ScriptedUpstream.Json("off")));
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(
            ups.Yaml(n => n == "broken" ? "breaker:\n  threshold: 0.01\n  minRequests: 1\n  cooldown: 20000" : ""), ups.Members()), time);
        using (var disable = await proxy.Admin.PostAsync("/api/v1/upstreams/off/disable", null))
        {
            Assert.Equal(HttpStatusCode.OK, disable.StatusCode);
        }
        using (var first = await proxy.Client.GetAsync("/v1/models"))
        {
            Assert.Equal(HttpStatusCode.InternalServerError, first.StatusCode); // opens the breaker for 20 s
        }

        using (var r = await proxy.Client.GetAsync("/v1/models"))
        {
            Assert.Equal(HttpStatusCode.ServiceUnavailable, r.StatusCode);
            Assert.Equal(TimeSpan.FromSeconds(20), r.Headers.RetryAfter?.Delta); // the breaker's cool-down, not 1 s
        }

        using (var disable = await proxy.Admin.PostAsync("/api/v1/upstreams/broken/disable", null))
        {
            Assert.Equal(HttpStatusCode.OK, disable.StatusCode);
        }
        using (var r = await proxy.Client.GetAsync("/v1/models"))
        {
            Assert.Equal(HttpStatusCode.ServiceUnavailable, r.StatusCode);
            Assert.Contains("no_available_upstream", await r.Content.ReadAsStringAsync());
            Assert.Null(r.Headers.RetryAfter); // nothing comes back by itself: no moment to promise
        }
    }

    [Fact]
    public async Task EveryKeyDisabled_503NoAvailableUpstream_LastAnswerPassedOnAsItWas()
    {
        const string billing = "{\"type\":\"error\",\"error\":{\"type\":\"billing_error\",\"message\":\"credit balance too low\"}}";
        await using var ups = await Upstreams.StartAsync(
            ("a", Error(403, "{\"error\":{\"code\":\"forbidden\"}}")),
            ("b", Error(429, billing)));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(ups.Yaml(_ => Auth), ups.Members()));

        // The first key fails over; the second is the last one left: its 429 reaches the client byte for byte.
        using (var first = await proxy.Client.GetAsync("/"))
        {
            var body = await first.Content.ReadAsStringAsync();
            Assert.True(first.StatusCode is HttpStatusCode.Forbidden or HttpStatusCode.TooManyRequests, body);
            if (first.StatusCode == HttpStatusCode.TooManyRequests)
            {
                Assert.Equal(billing, body);
            }
        }
        Assert.Equal(1, ups["a"].Count);
        Assert.Equal(1, ups["b"].Count);
        using (var second = await proxy.Client.GetAsync("/"))
        {
            Assert.Equal(HttpStatusCode.ServiceUnavailable, second.StatusCode);
            Assert.Contains("no_available_upstream", await second.Content.ReadAsStringAsync());
        }
        Assert.Equal(1, ups["a"].Count);
        Assert.Equal(1, ups["b"].Count);
        var health = await HealthAsync(proxy);
        Assert.Contains("\"reason\":\"status_403\"", health);
        Assert.Contains("\"reason\":\"billing_error\"", health);
    }

    [Fact]
    public async Task Huge429Body_ReadOnlyUpToTheBound_ReachesTheClientWhole()
    {
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var head = "{\"error\":{\"code\":\"insufficient_quota\",\"message\":\"" + new string('x', KeyHealthScreen.Bound + 4096);
        const string tail = "\"}}";
        await using var ups = await Upstreams.StartAsync(("a", async ctx =>
        {
            ctx.Response.StatusCode = 429;
            ctx.Response.ContentType = "application/json";
            await ctx.Response.WriteAsync(head);
            await ctx.Response.Body.FlushAsync();
            // The rest only once the client has the headers: a proxy reading past the bound would wait here forever.
            await release.Task.WaitAsync(TimeSpan.FromSeconds(20));
            await ctx.Response.WriteAsync(tail);
        }));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(ups.Yaml(_ => Auth), ups.Members()));

        using var response = await proxy.Client.GetAsync("/", HttpCompletionOption.ResponseHeadersRead).WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(HttpStatusCode.TooManyRequests, response.StatusCode);
        release.SetResult();
        Assert.Equal(head + tail, await response.Content.ReadAsStringAsync());
        // Not classified past the bound: a plain 429, the key stays enabled.
        Assert.Contains("\"disabled\":null", await HealthAsync(proxy));
    }

    [Fact]
    public async Task Small429Body_Alone_PassedOnUnchanged_KeyDisabled()
    {
        const string quota = "{\"error\":{\"message\":\"quota\",\"type\":\"insufficient_quota\",\"param\":null,\"code\":\"insufficient_quota\"}}";
        await using var ups = await Upstreams.StartAsync(("a", Error(429, quota)));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(ups.Yaml(_ => Auth), ups.Members()));

        using (var r = await proxy.Client.GetAsync("/"))
        {
            Assert.Equal(HttpStatusCode.TooManyRequests, r.StatusCode);
            Assert.Equal("application/json", r.Content.Headers.ContentType?.MediaType);
            Assert.Equal(quota, await r.Content.ReadAsStringAsync());
        }
        Assert.Contains("\"reason\":\"insufficient_quota\"", await HealthAsync(proxy));
    }

    [Fact]
    public async Task Quota429_BodyBreaksWhileRead_ClientGetsAnError_ProxyKeepsServing()
    {
        var broken = 1;
        await using var ups = await Upstreams.StartAsync(("a", async ctx =>
        {
            if (Interlocked.Exchange(ref broken, 0) == 1)
            {
                ctx.Response.StatusCode = 429;
                ctx.Response.ContentType = "application/json";
                ctx.Response.ContentLength = 500;
                await ctx.Response.WriteAsync("{\"error\":{\"code\":");
                await ctx.Response.Body.FlushAsync();
                ctx.Abort();
                return;
            }
            await ScriptedUpstream.Json("a")(ctx);
        }));
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(ups.Yaml(_ => Auth), ups.Members()), time);

        // Nothing was sent yet, so the broken read is a transport failure like any other: 502 (or another member).
        using (var first = await proxy.Client.GetAsync("/"))
        {
            Assert.Equal(HttpStatusCode.BadGateway, first.StatusCode);
            Assert.Contains("upstream_unavailable", await first.Content.ReadAsStringAsync());
        }
        // Whether the 429 head reached the proxy before the reset is the loopback's race: when it did, the key is cooling
        // (a 429 is a 429), which is not what this test is about. Past any cool-down, the key must serve: not disabled.
        time.Advance(LLMProxy.Resilience.RetryAfter.MaxCoolDown + TimeSpan.FromSeconds(1));
        using var second = await proxy.Client.GetAsync("/");
        Assert.Equal(HttpStatusCode.OK, second.StatusCode);
        Assert.Contains("\"disabled\":null", await HealthAsync(proxy));
    }

    /// <summary>An upstream that sends a 429's or 403's head and then goes silent timed out (<c>timeout.request</c> bounds every
    /// gap of the body): SPEC §6 answers that 504 <c>upstream_timeout</c>, not 502 as if its answer were malformed.</summary>
    [Theory]
    [InlineData(429)]
    [InlineData(403)]
    public async Task ScreenedErrorBodyStalls_504UpstreamTimeout(int status)
    {
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var ups = await Upstreams.StartAsync(("a", async ctx =>
        {
            ctx.Response.StatusCode = status;
            ctx.Response.ContentType = "application/json";
            ctx.Response.ContentLength = 500;
            await ctx.Response.WriteAsync("{\"error\":{\"code\":");
            await ctx.Response.Body.FlushAsync();
            await release.Task.WaitAsync(TimeSpan.FromSeconds(30), ctx.RequestAborted);
        }));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(ups.Yaml(_ => Auth), ups.Members(),
            "httpClient:\n  timeout:\n    request: 500"));

        using var response = await proxy.Client.GetAsync("/");
        release.TrySetResult();
        Assert.Equal(HttpStatusCode.GatewayTimeout, response.StatusCode);
        Assert.Contains("upstream_timeout", await response.Content.ReadAsStringAsync());
        Assert.Contains(proxy.Logs.Entries, e => e.Message.Contains("upstream attempt failed") && e.Message.Contains("error=timeout"));
    }

    /// <summary>The body of a 429 or 403 to the proxy's key is read before anything is sent (§13.4). A client that leaves
    /// while that read waits is a client gone — no verdict on the upstream (SPEC §5 counts connect errors, timeouts,
    /// resets and 5xx): counted as a protocol failure, every client that hung up there pushed the key's breaker open for
    /// everyone (here one, with <c>minRequests: 1</c>).</summary>
    [Theory]
    [InlineData(429)]
    [InlineData(403)]
    public async Task ClientLeavesWhileAScreenedErrorBodyIsRead_NoBreakerFailure(int status)
    {
        var stalled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var upstreamCancelled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var first = 1;
        await using var ups = await Upstreams.StartAsync(("a", async ctx =>
        {
            if (Interlocked.Exchange(ref first, 0) == 0)
            {
                await ScriptedUpstream.Json("a")(ctx);
                return;
            }
            ctx.Response.StatusCode = status;
            ctx.Response.ContentType = "application/json";
            ctx.Response.ContentLength = 500;
            await ctx.Response.WriteAsync("{\"error\":{\"code\":");
            await ctx.Response.Body.FlushAsync();
            stalled.SetResult();
            try
            {
                await Task.Delay(TimeSpan.FromSeconds(30), ctx.RequestAborted);
            }
            catch (OperationCanceledException)
            {
                upstreamCancelled.SetResult();
            }
        }));
        const string breaker = "breaker:\n  threshold: 0.5\n  minRequests: 1\n  cooldown: 30000\n  interval: 60000\n  maxRequests: 1";
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(ups.Yaml(_ => Auth + "\n" + breaker), ups.Members()), time);

        using (var cts = new CancellationTokenSource())
        {
            var leaving = proxy.Client.GetAsync("/", cts.Token);
            await stalled.Task.WaitAsync(TimeSpan.FromSeconds(10));
            await cts.CancelAsync();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => leaving);
        }
        await upstreamCancelled.Task.WaitAsync(TimeSpan.FromSeconds(10));

        // The access line is written once the attempt's lease is back.
        await Eventually.WaitUntilAsync(() => Task.FromResult(proxy.Logs.Entries.Any(e => e.Message.StartsWith("GET / ", StringComparison.Ordinal))),
            TimeSpan.FromSeconds(10));
        time.Advance(RetryAfter.DefaultCoolDown + TimeSpan.FromSeconds(1)); // a 429 is a 429: the key cooled down (not the breaker's 30 s)
        using var next = await proxy.Client.GetAsync("/");
        Assert.Equal(HttpStatusCode.OK, next.StatusCode); // the breaker is still closed
        Assert.DoesNotContain(proxy.Logs.Entries, e => e.Message.Contains("upstream attempt failed"));
    }

    [Theory]
    [InlineData("{\"error\":{\"code\":\"insufficient_quota\",\"type\":\"x\"}}", "insufficient_quota")]
    [InlineData("{\"error\":{\"type\":\"insufficient_quota\"}}", "insufficient_quota")]
    [InlineData("{\"type\":\"error\",\"error\":{\"type\":\"billing_error\"}}", "billing_error")]
    [InlineData("{\"type\":\"error\",\"error\":{\"type\":\"permission_error\"}}", "permission_error")]
    [InlineData("{\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\"}}", null)]
    [InlineData("{\"error\":{\"code\":\"rate_limit_exceeded\",\"type\":\"requests\"}}", null)]
    [InlineData("{\"error\":\"insufficient_quota\"}", null)]
    [InlineData("not json", null)]
    [InlineData("", null)]
    public void Classify_ReadsOpenAIAndAnthropicErrorShapes(string body, string? expected) =>
        Assert.Equal(expected, KeyHealthScreen.Classify(System.Text.Encoding.UTF8.GetBytes(body)));
}
