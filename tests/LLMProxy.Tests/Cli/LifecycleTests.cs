using System.Net;
using System.Net.Http.Headers;
using LLMProxy.Tests.Forwarding;
using LLMProxy.Tests.Infrastructure;
using Microsoft.AspNetCore.Http;

namespace LLMProxy.Tests.Cli;

public class LifecycleTests
{
    private static async Task<(ProxyProcess Process, int Port, int AdminPort)> StartProxyAsync(string upstreamUrl, string extraServer = "", params string[] extraArgs)
    {
        var port = StreamingAndErrorTests.FreePort();
        var admin = StreamingAndErrorTests.FreePort();
        var path = Path.Combine(Path.GetTempPath(), $"llmproxy-life-{Guid.NewGuid():N}.yaml");
        await File.WriteAllTextAsync(path, ProcessConfig.Minimal(port, admin, upstreamUrl, extraServer));
        var process = ProxyProcess.Start(["-c", path, .. extraArgs]);
        await process.WaitForOutputAsync("ready:", count: 2);
        return (process, port, admin);
    }

    private static Func<HttpContext, Task> SlowSse(int chunks, int intervalMs) => async ctx =>
    {
        ctx.Response.ContentType = "text/event-stream";
        for (var i = 0; i < chunks; i++)
        {
            await ctx.Response.WriteAsync($"data: {i}\n\n", ctx.RequestAborted);
            await ctx.Response.Body.FlushAsync(ctx.RequestAborted);
            await Task.Delay(intervalMs, ctx.RequestAborted);
        }
        await ctx.Response.WriteAsync("data: [DONE]\n\n", ctx.RequestAborted);
    };

    [Fact]
    public async Task Start_LogsOneReadyLinePerListener_AndServes()
    {
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u1"));
        var (process, port, admin) = await StartProxyAsync(upstream.Url);
        await using var _ = process;
        using var client = new HttpClient();

        Assert.Equal("success", await client.GetStringAsync($"http://127.0.0.1:{admin}/ping"));
        using var response = await client.GetAsync($"http://127.0.0.1:{port}/v1/models");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(2, process.Stdout.Split('\n').Count(l => l.Contains("ready:")));
        var metrics = await client.GetStringAsync($"http://127.0.0.1:{admin}/metrics");
        Assert.Contains("process_cpu_seconds_total", metrics);
        Assert.Contains("dotnet_total_memory_bytes", metrics);
    }

    [Theory]
    [InlineData(ProxyProcess.SIGTERM)]
    [InlineData(ProxyProcess.SIGINT)]
    public async Task Signal_DrainsLiveStream_ThenExitsZero(int signal)
    {
        await using var upstream = await ScriptedUpstream.StartAsync(SlowSse(chunks: 10, intervalMs: 100));
        var (process, port, _) = await StartProxyAsync(upstream.Url, "", "--shutdown-timeout", "20000");
        await using var _ = process;
        using var client = new HttpClient();

        using var response = await client.SendAsync(new HttpRequestMessage(HttpMethod.Get, $"http://127.0.0.1:{port}/stream"), HttpCompletionOption.ResponseHeadersRead);
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        Assert.Equal("data: 0", await reader.ReadLineAsync());

        process.Signal(signal);
        var rest = await reader.ReadToEndAsync();
        Assert.Contains("data: 9", rest);
        Assert.EndsWith("data: [DONE]\n\n", rest);
        Assert.Equal(0, await process.WaitForExitAsync(TimeSpan.FromSeconds(30)));
        Assert.Contains("shutting down", process.Stdout);
    }

    [Fact]
    public async Task Signal_StreamOutlivingShutdownTimeout_IsAborted_ExitZero()
    {
        await using var upstream = await ScriptedUpstream.StartAsync(SlowSse(chunks: 200, intervalMs: 100));
        var (process, port, _) = await StartProxyAsync(upstream.Url, "", "--shutdown-timeout", "500");
        await using var _ = process;
        using var client = new HttpClient();

        using var response = await client.SendAsync(new HttpRequestMessage(HttpMethod.Get, $"http://127.0.0.1:{port}/stream"), HttpCompletionOption.ResponseHeadersRead);
        var stream = await response.Content.ReadAsStreamAsync();
        var buffer = new byte[256];
        Assert.True(await stream.ReadAsync(buffer) > 0);

        process.Signal(ProxyProcess.SIGTERM);
        await StreamAssert.EndsAbruptlyAsync(stream);
        Assert.Equal(0, await process.WaitForExitAsync(TimeSpan.FromSeconds(30)));
    }

    [Fact]
    public async Task JsonFlag_EveryLogLineIsJson_NoSecrets()
    {
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u1"));
        var (process, port, _) = await StartProxyAsync(upstream.Url, "", "--json", "--release");
        await using var _ = process;
        using var client = new HttpClient();
        using var request = new HttpRequestMessage(HttpMethod.Post, $"http://127.0.0.1:{port}/v1/chat/completions?key=query-secret") { Content = new StringContent("{}") };
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", "client-secret-123");
        using var response = await client.SendAsync(request);

        await process.WaitForOutputAsync("request_id");
        process.Signal(ProxyProcess.SIGTERM);
        Assert.Equal(0, await process.WaitForExitAsync(TimeSpan.FromSeconds(30)));
        var lines = process.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.NotEmpty(lines);
        foreach (var line in lines)
        {
            using var doc = System.Text.Json.JsonDocument.Parse(line);
            Assert.Equal(System.Text.Json.JsonValueKind.Object, doc.RootElement.ValueKind);
        }
        Assert.DoesNotContain("sk-cli-test-secret-4242", process.Stdout);
        Assert.DoesNotContain("client-secret-123", process.Stdout);
        Assert.DoesNotContain("query-secret", process.Stdout);
    }

    [Fact]
    public async Task Sighup_ReloadsConfigFile_WithoutRestart()
    {
        await using var first = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("first"));
        await using var second = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("second"));
        var port = StreamingAndErrorTests.FreePort();
        var admin = StreamingAndErrorTests.FreePort();
        var path = Path.Combine(Path.GetTempPath(), $"llmproxy-hup-{Guid.NewGuid():N}.yaml");
        await File.WriteAllTextAsync(path, ProcessConfig.Minimal(port, admin, first.Url));
        await using var process = ProxyProcess.Start("-c", path, "--release");
        await process.WaitForOutputAsync("ready:", count: 2);
        using var client = new HttpClient();
        using (var before = await client.GetAsync($"http://127.0.0.1:{port}/"))
        {
            Assert.Equal("first", before.UpstreamName());
        }

        await File.WriteAllTextAsync(path, ProcessConfig.Minimal(port, admin, second.Url));
        process.Signal(ProxyProcess.SIGHUP);
        await process.WaitForOutputAsync("configuration reloaded");

        using (var after = await client.GetAsync($"http://127.0.0.1:{port}/"))
        {
            Assert.Equal("second", after.UpstreamName());
        }
        process.Signal(ProxyProcess.SIGTERM);
        Assert.Equal(0, await process.WaitForExitAsync(TimeSpan.FromSeconds(30)));
    }

    [Fact]
    public async Task Reload_AliasBombOrCycle_RefusedBySighupAndApi_OldConfigKeepsServing_TestFlagExitsOne()
    {
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("first"));
        var port = StreamingAndErrorTests.FreePort();
        var admin = StreamingAndErrorTests.FreePort();
        var path = Path.Combine(Path.GetTempPath(), $"llmproxy-bomb-{Guid.NewGuid():N}.yaml");
        var valid = ProcessConfig.Minimal(port, admin, upstream.Url);
        await File.WriteAllTextAsync(path, valid);
        await using var process = ProxyProcess.Start("-c", path, "--release");
        await process.WaitForOutputAsync("ready:", count: 2);
        using var client = new HttpClient();

        // A cycle (an alias inside its own anchor) used to overflow the stack and kill the running proxy.
        await File.WriteAllTextAsync(path, valid + "loop: &x [1, *x]\n");
        process.Signal(ProxyProcess.SIGHUP);
        await process.WaitForOutputAsync("refers to a node that contains it (a cycle)");
        using (var r = await client.GetAsync($"http://127.0.0.1:{port}/"))
        {
            Assert.Equal("first", r.UpstreamName());
        }

        // A billion laughs used as a mapping key used to hang the reload for minutes.
        await File.WriteAllTextAsync(path, valid + Configuration.ConfigLoaderLimitsTests.LaughsAsKey);
        using (var reload = await client.PostAsync($"http://127.0.0.1:{admin}/api/v1/reload", null))
        {
            Assert.Equal(HttpStatusCode.BadRequest, reload.StatusCode);
            Assert.Contains("more than 100000 nodes", await reload.Content.ReadAsStringAsync());
        }
        using (var r = await client.GetAsync($"http://127.0.0.1:{port}/"))
        {
            Assert.Equal("first", r.UpstreamName());
        }

        var (code, _, stderr) = await ProxyProcess.RunAsync("-t", "-c", path);
        Assert.Equal(1, code);
        Assert.Contains("configuration refused at line", stderr);
        process.Signal(ProxyProcess.SIGTERM);
        Assert.Equal(0, await process.WaitForExitAsync(TimeSpan.FromSeconds(30)));
    }
}
