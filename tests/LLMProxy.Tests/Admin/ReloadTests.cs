using System.Net;
using System.Net.Http.Headers;
using System.Text.Json;
using LLMProxy.Tests.Forwarding;
using LLMProxy.Tests.Infrastructure;

namespace LLMProxy.Tests.Admin;

public class ReloadTests
{
    private static string Breaker => "breaker:\n  threshold: 0.5\n  minRequests: 2\n  cooldown: 60000";

    [Fact]
    public async Task Reload_AddsUpstream_KeepsBreakerStateOfUnchangedUpstream()
    {
        await using var ups = await Upstreams.StartAsync(("bad", ScriptedUpstream.Json("bad", 500)), ("good", ScriptedUpstream.Json("good")),
            ("added", ScriptedUpstream.Json("added")));
        string Yaml(string members, string upstreams) => TestProxy.Config(upstreams, members);
        var bad = $"- name: bad\n  url: \"{ups["bad"].Url}\"\n  " + Breaker.Replace("\n", "\n  ");
        var good = $"- name: good\n  url: \"{ups["good"].Url}\"";
        var added = $"- name: added\n  url: \"{ups["added"].Url}\"";
        var current = Yaml("- name: bad\n- name: good", bad + "\n" + good);
        await using var proxy = await TestProxy.StartAsync(current, reloadYaml: () => current);

        for (var i = 0; i < 4; i++)
        {
            using var _ = await proxy.Client.GetAsync("/");
        }
        AssertSample(await proxy.Admin.GetStringAsync("/metrics"), "llmproxy_circuit_breaker_state{upstream=\"bad\"}", 2);

        current = Yaml("- name: bad\n- name: good\n- name: added", bad + "\n" + good + "\n" + added);
        using var reload = await proxy.Admin.PostAsync("/api/v1/reload", null);
        Assert.Equal(HttpStatusCode.OK, reload.StatusCode);
        Assert.Contains("\"reloaded\":true", await reload.Content.ReadAsStringAsync());

        var seen = new HashSet<string>();
        for (var i = 0; i < 6; i++)
        {
            using var r = await proxy.Client.GetAsync("/");
            Assert.Equal(HttpStatusCode.OK, r.StatusCode);
            seen.Add(r.UpstreamName());
        }
        Assert.Contains("added", seen);
        // "bad" is unchanged, so its open breaker came along: it got no traffic after the reload.
        Assert.DoesNotContain("bad", seen);
        using var health = JsonDocument.Parse(await proxy.Admin.GetStringAsync("/health"));
        var states = health.RootElement.GetProperty("groups")[0].GetProperty("upstreams").EnumerateArray()
            .ToDictionary(u => u.GetProperty("name").GetString()!, u => u.GetProperty("breaker").GetString());
        Assert.Equal("open", states["bad"]);
        Assert.Contains(proxy.Logs.Entries, e => e.Message.StartsWith("configuration reloaded", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Reload_InvalidConfig_Rejected_OldConfigKeepsServing()
    {
        await using var up = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u1"));
        var current = TestProxy.Config($"- name: u1\n  url: \"{up.Url}\"", "- name: u1");
        await using var proxy = await TestProxy.StartAsync(current, reloadYaml: () => current);

        current = TestProxy.Config($"- name: u1\n  url: \"{up.Url}\"\n  rateLimit: 1", "- name: u1").Replace("defaultGroup: g", "defaultGroup: missing");
        using var reload = await proxy.Admin.PostAsync("/api/v1/reload", null);

        Assert.Equal(HttpStatusCode.BadRequest, reload.StatusCode);
        using var body = JsonDocument.Parse(await reload.Content.ReadAsStringAsync());
        Assert.False(body.RootElement.GetProperty("reloaded").GetBoolean());
        var errors = body.RootElement.GetProperty("errors").EnumerateArray().Select(e => e.GetString()!).ToList();
        Assert.Contains(errors, e => e.Contains("defaultGroup", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.Contains("rateLimit", StringComparison.Ordinal));
        Assert.Contains(proxy.Logs.Entries, e => e.Message.Contains("not reloaded", StringComparison.Ordinal));
        using var r = await proxy.Client.GetAsync("/");
        Assert.Equal(HttpStatusCode.OK, r.StatusCode);
    }

    [Fact]
    public async Task Reload_ListenerChange_RejectedAsNeedingRestart()
    {
        await using var up = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u1"));
        var current = TestProxy.Config($"- name: u1\n  url: \"{up.Url}\"", "- name: u1");
        await using var proxy = await TestProxy.StartAsync(current, reloadYaml: () => current);

        current = current.Replace("port: 3000", "port: 3001");
        using var reload = await proxy.Admin.PostAsync("/api/v1/reload", null);

        Assert.Equal(HttpStatusCode.BadRequest, reload.StatusCode);
        Assert.Contains("restart", await reload.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task Reload_RequiresAdminTokenWhenSet()
    {
        await using var up = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u1"));
        var current = TestProxy.Config($"- name: u1\n  url: \"{up.Url}\"", "- name: u1", adminExtra: "token: \"reload-token\"");
        await using var proxy = await TestProxy.StartAsync(current, reloadYaml: () => current);

        using var anonymous = await proxy.Admin.PostAsync("/api/v1/reload", null);
        await StreamingAndErrorTests.AssertErrorBody(anonymous, HttpStatusCode.Unauthorized, "unauthorized");
        using var request = new HttpRequestMessage(HttpMethod.Post, "/api/v1/reload");
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", "reload-token");
        using var ok = await proxy.Admin.SendAsync(request);
        Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
    }

    [Fact]
    public async Task Reload_StreamInFlight_FinishesOnItsSnapshot()
    {
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var up = await ScriptedUpstream.StartAsync(async ctx =>
        {
            ctx.Response.ContentType = "text/event-stream";
            await Microsoft.AspNetCore.Http.HttpResponseWritingExtensions.WriteAsync(ctx.Response, "data: 1\n\n");
            await ctx.Response.Body.FlushAsync();
            await release.Task.WaitAsync(TimeSpan.FromSeconds(20));
            await Microsoft.AspNetCore.Http.HttpResponseWritingExtensions.WriteAsync(ctx.Response, "data: [DONE]\n\n");
        });
        await using var other = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("other"));
        var current = TestProxy.Config($"- name: u1\n  url: \"{up.Url}\"", "- name: u1");
        await using var proxy = await TestProxy.StartAsync(current, reloadYaml: () => current);

        using var stream = await proxy.Client.SendAsync(new HttpRequestMessage(HttpMethod.Get, "/stream"), HttpCompletionOption.ResponseHeadersRead);
        using var reader = new StreamReader(await stream.Content.ReadAsStreamAsync());
        Assert.Equal("data: 1", await reader.ReadLineAsync());

        current = TestProxy.Config($"- name: u2\n  url: \"{other.Url}\"", "- name: u2");
        using (var reload = await proxy.Admin.PostAsync("/api/v1/reload", null))
        {
            Assert.Equal(HttpStatusCode.OK, reload.StatusCode);
        }
        using (var after = await proxy.Client.GetAsync("/"))
        {
            Assert.Equal("other", after.UpstreamName());
        }
        release.SetResult();
        Assert.Contains("data: [DONE]", await reader.ReadToEndAsync());
    }

    /// <summary>Two reloads overlap (SIGHUPs in a row, a ConfigMap updated twice, SIGHUP beside the API): the earlier one is
    /// slow to read the file, and meanwhile the file changes and a later reload reads and applies it. What the earlier one
    /// read must not be swapped in over it: the proxy would run a config older than the file until the next reload.</summary>
    [Fact]
    public async Task Reload_EarlierSlowReadFinishingLast_DoesNotUndoTheLaterReload()
    {
        await using var ups = await Upstreams.StartAsync(("start", ScriptedUpstream.Json("start")), ("older", ScriptedUpstream.Json("older")),
            ("newer", ScriptedUpstream.Json("newer")));
        string Yaml(string name) => TestProxy.Config($"- name: {name}\n  url: \"{ups[name].Url}\"", $"- name: {name}");
        var file = Yaml("older");
        var firstReading = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var releaseFirst = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var reads = 0;
        string Read()
        {
            var content = Volatile.Read(ref file);
            if (Interlocked.Increment(ref reads) == 1)
            {
                firstReading.SetResult();
                releaseFirst.Task.Wait(TimeSpan.FromSeconds(30));
            }
            return content;
        }
        await using var proxy = await TestProxy.StartAsync(Yaml("start"), reloadYaml: Read);

        var first = proxy.Admin.PostAsync("/api/v1/reload", null);
        await firstReading.Task.WaitAsync(TimeSpan.FromSeconds(30));
        Volatile.Write(ref file, Yaml("newer"));
        using (var second = await proxy.Admin.PostAsync("/api/v1/reload", null))
        {
            Assert.Equal(HttpStatusCode.OK, second.StatusCode);
        }
        using (var r = await proxy.Client.GetAsync("/"))
        {
            Assert.Equal("newer", r.UpstreamName());
        }

        releaseFirst.SetResult();
        using (var late = await first)
        {
            Assert.Equal(HttpStatusCode.OK, late.StatusCode);
        }
        using (var r = await proxy.Client.GetAsync("/"))
        {
            Assert.Equal("newer", r.UpstreamName());
        }
        Assert.Equal(["newer"], proxy.Host.Runtime.Upstreams.Keys);
        Assert.Contains(proxy.Logs.Entries, e => e.Message.Contains("a reload asked for later has already applied", StringComparison.Ordinal));
    }

    /// <summary>An upstream whose breaker was open loses its breaker block on reload: it takes traffic again, and like an
    /// upstream started without a breaker it has no breaker series — not the old "open" one, which would keep
    /// LLMProxyBreakerOpen firing for an upstream that has no breaker at all.</summary>
    [Fact]
    public async Task Reload_BreakerRemovedWhileOpen_ItsOpenSeriesGoes()
    {
        await using var up = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u1", 500));
        var plain = $"- name: u1\n  url: \"{up.Url}\"";
        const string Once = "retry:\n  attempts: 1";
        var current = TestProxy.Config(plain + "\n  " + Breaker.Replace("\n", "\n  "), "- name: u1", groupExtra: Once);
        await using var proxy = await TestProxy.StartAsync(current, reloadYaml: () => current);
        for (var i = 0; i < 4; i++)
        {
            using var _ = await proxy.Client.GetAsync("/");
        }
        await AssertSampleAsync(proxy.Admin, "llmproxy_circuit_breaker_state{upstream=\"u1\"}", 2);

        current = TestProxy.Config(plain, "- name: u1", groupExtra: Once);
        using (var reload = await proxy.Admin.PostAsync("/api/v1/reload", null))
        {
            Assert.Equal(HttpStatusCode.OK, reload.StatusCode);
        }

        using (var r = await proxy.Client.GetAsync("/"))
        {
            Assert.Equal("u1", r.UpstreamName());
        }
        var metrics = await proxy.Admin.GetStringAsync("/metrics");
        Assert.DoesNotContain(MetricsText.Parse(metrics), s => s.Name == "llmproxy_circuit_breaker_state" && s.Labels["upstream"] == "u1");
    }

    /// <summary>A reload changes an upstream's breaker while a request to it is in flight: the request ends on the replaced
    /// breaker, and when its failure opens that one, the upstream's series, log and transition count must not say so —
    /// the breaker in force is the new one, closed, and the upstream takes traffic.</summary>
    [Fact]
    public async Task Reload_ReplacedBreakerOpenedByItsLastRequest_DoesNotShowAsOpen()
    {
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var held = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var calls = 0;
        await using var up = await ScriptedUpstream.StartAsync(async ctx =>
        {
            var call = Interlocked.Increment(ref calls);
            if (call == 2)
            {
                held.SetResult();
                await release.Task.WaitAsync(TimeSpan.FromSeconds(30));
            }
            await ScriptedUpstream.Json("u1", call <= 2 ? 500 : 200)(ctx);
        });
        string Yaml(string threshold) => TestProxy.Config($"- name: u1\n  url: \"{up.Url}\"\n  "
            + Breaker.Replace("0.5", threshold, StringComparison.Ordinal).Replace("\n", "\n  "), "- name: u1", groupExtra: "retry:\n  attempts: 1");
        var current = Yaml("0.5");
        await using var proxy = await TestProxy.StartAsync(current, reloadYaml: () => current);
        using (var first = await proxy.Client.GetAsync("/"))
        {
            Assert.Equal(HttpStatusCode.InternalServerError, first.StatusCode);
        }
        var second = proxy.Client.GetAsync("/");
        await held.Task.WaitAsync(TimeSpan.FromSeconds(30));

        current = Yaml("0.6");
        using (var reload = await proxy.Admin.PostAsync("/api/v1/reload", null))
        {
            Assert.Equal(HttpStatusCode.OK, reload.StatusCode);
        }
        release.SetResult();
        using (var r = await second)
        {
            Assert.Equal(HttpStatusCode.InternalServerError, r.StatusCode);
        }
        // The access line is written once the request's attempt, and its breaker verdict, are done.
        await Eventually.WaitUntilAsync(() => proxy.Logs.Entries.Count(e => e.Category == "LLMProxy.Access" && e.Id.Id == 1) == 2,
            TimeSpan.FromSeconds(5));

        var metrics = await proxy.Admin.GetStringAsync("/metrics");
        AssertSample(metrics, "llmproxy_circuit_breaker_state{upstream=\"u1\"}", 0);
        Assert.Equal(0, MetricsText.Sum(metrics, "llmproxy_circuit_breaker_state_changes_total"));
        Assert.DoesNotContain(proxy.Logs.Entries, e => e.Message.StartsWith("circuit breaker u1", StringComparison.Ordinal));
        using (var r = await proxy.Client.GetAsync("/"))
        {
            Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        }
    }

    /// <summary>A file that changes several things only a restart applies is rejected naming every one (SPEC §8: log every
    /// error), not one per attempt: a forward added, the admin port and the shared state's settings.</summary>
    [Fact]
    public async Task Reload_SeveralRestartOnlyChanges_AllNamedAtOnce()
    {
        await using var up = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u1"));
        var current = TestProxy.Config($"- name: u1\n  url: \"{up.Url}\"", "- name: u1");
        await using var proxy = await TestProxy.StartAsync(current, reloadYaml: () => current);

        current = current.Replace("port: 9000", "port: 9001", StringComparison.Ordinal)
            .Replace("  admin:", "    - name: second\n      port: 3002\n      address: \"127.0.0.1\"\n      defaultGroup: g\n  admin:", StringComparison.Ordinal)
            + "\ncluster:\n  redis:\n    url: \"redis://127.0.0.1:1\"\n";
        using var reload = await proxy.Admin.PostAsync("/api/v1/reload", null);

        Assert.Equal(HttpStatusCode.BadRequest, reload.StatusCode);
        using var body = JsonDocument.Parse(await reload.Content.ReadAsStringAsync());
        var errors = body.RootElement.GetProperty("errors").EnumerateArray().Select(e => e.GetString()!).ToList();
        Assert.Contains(errors, e => e.StartsWith("httpServer.forwards:", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("httpServer.admin:", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("cluster:", StringComparison.Ordinal));
        Assert.Equal(3, errors.Count);
    }

    /// <summary><c>httpServer.shutdownTimeout</c> is read once at start (the drain SIGTERM allows, and each listener's host
    /// cap on it): a reload that changes it cannot apply it, so it is refused as needing a restart — not answered
    /// "reloaded" while the old drain stays in force.</summary>
    [Fact]
    public async Task Reload_ShutdownTimeoutChange_RejectedAsNeedingRestart()
    {
        await using var up = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u1"));
        var current = TestProxy.Config($"- name: u1\n  url: \"{up.Url}\"", "- name: u1", serverExtra: "shutdownTimeout: 30000");
        await using var proxy = await TestProxy.StartAsync(current, reloadYaml: () => current);

        current = current.Replace("shutdownTimeout: 30000", "shutdownTimeout: 120000", StringComparison.Ordinal);
        using var reload = await proxy.Admin.PostAsync("/api/v1/reload", null);

        Assert.Equal(HttpStatusCode.BadRequest, reload.StatusCode);
        using var body = JsonDocument.Parse(await reload.Content.ReadAsStringAsync());
        var error = Assert.Single(body.RootElement.GetProperty("errors").EnumerateArray()).GetString()!;
        Assert.StartsWith("httpServer.shutdownTimeout:", error, StringComparison.Ordinal);
        Assert.Contains("restart", error, StringComparison.Ordinal);
        Assert.Equal(30000, proxy.Host.Runtime.Config.HttpServer.ShutdownTimeout);
    }
}
