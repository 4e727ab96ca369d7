using System.Diagnostics;
using System.Net.Sockets;
using LLMProxy.Tests.Forwarding;
using LLMProxy.Tests.Infrastructure;
using Microsoft.AspNetCore.Http;

namespace LLMProxy.Tests.Reliability;

/// <summary>SIGTERM to the real binary while many streams are live: finishers finish intact, the rest are cut
/// visibly, and the process exits 0 within the shutdown timeout.</summary>
public class ShutdownUnderLoadTests
{
    private const int Streams = 50;
    private const int ShutdownTimeoutMs = 4000;
    private const int ChunkIntervalMs = 100;
    /// <summary>Short streams end ~1.5 s after they start, well inside the drain; long ones would need 30 s.</summary>
    private const int ShortChunks = 15;
    private const int LongChunks = 300;

    [Fact]
    public async Task Sigterm_With50LiveStreams_FinishersIntact_OthersAborted_ExitZeroInTime()
    {
        var upstreamLive = 0;
        await using var upstream = await ScriptedUpstream.StartAsync(async ctx =>
        {
            Interlocked.Increment(ref upstreamLive);
            try
            {
                var chunks = int.Parse(ctx.Request.Query["chunks"].ToString(), System.Globalization.CultureInfo.InvariantCulture);
                ctx.Response.ContentType = "text/event-stream";
                for (var i = 0; i < chunks; i++)
                {
                    await ctx.Response.WriteAsync($"data: {i}\n\n", ctx.RequestAborted);
                    await ctx.Response.Body.FlushAsync(ctx.RequestAborted);
                    await Task.Delay(ChunkIntervalMs, ctx.RequestAborted);
                }
                await ctx.Response.WriteAsync("data: [DONE]\n\n", ctx.RequestAborted);
            }
            catch (OperationCanceledException)
            {
            }
            finally
            {
                Interlocked.Decrement(ref upstreamLive);
            }
        }, recordBody: false);
        var port = StreamingAndErrorTests.FreePort();
        var admin = StreamingAndErrorTests.FreePort();
        var path = Path.Combine(Path.GetTempPath(), $"llmproxy-shutdown-{Guid.NewGuid():N}.yaml");
        await File.WriteAllTextAsync(path, ProcessConfig.Minimal(port, admin, upstream.Url, groupExtra: "    httpClient:\n      connect:\n        maxPerHost: 200"));
        await using var process = ProxyProcess.Start("-c", path, "--shutdown-timeout", ShutdownTimeoutMs.ToString(System.Globalization.CultureInfo.InvariantCulture));
        await process.WaitForOutputAsync("ready:", count: 2);
        using var client = new HttpClient { Timeout = Timeout.InfiniteTimeSpan };

        // Open every stream and wait (signal, not sleep) until each has delivered its first event.
        var firstEvent = new CountdownEvent(Streams);
        var firstEventTask = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var streams = Enumerable.Range(0, Streams).Select(i => Task.Run(async () =>
        {
            var chunks = i % 2 == 0 ? ShortChunks : LongChunks;
            using var response = await client.SendAsync(new HttpRequestMessage(HttpMethod.Post, $"http://127.0.0.1:{port}/v1/chat/completions?chunks={chunks}")
            {
                Content = new StringContent("{\"stream\":true}"),
            }, HttpCompletionOption.ResponseHeadersRead);
            using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
            var text = new System.Text.StringBuilder();
            var first = await reader.ReadLineAsync();
            text.Append(first).Append('\n');
            if (firstEvent.Signal())
            {
                firstEventTask.TrySetResult();
            }
            try
            {
                text.Append(await reader.ReadToEndAsync());
                return (Short: chunks == ShortChunks, Clean: true, Text: text.ToString());
            }
            catch (Exception ex) when (ex is IOException or HttpRequestException)
            {
                return (Short: chunks == ShortChunks, Clean: false, Text: text.ToString());
            }
        })).ToArray();
        await firstEventTask.Task.WaitAsync(TimeSpan.FromSeconds(30));

        var clock = Stopwatch.StartNew();
        process.Signal(ProxyProcess.SIGTERM);
        var exitCode = await process.WaitForExitAsync(TimeSpan.FromMilliseconds(ShutdownTimeoutMs) + TimeSpan.FromSeconds(15));
        var exitedAfter = clock.Elapsed;
        var results = await Task.WhenAll(streams).WaitAsync(TimeSpan.FromSeconds(10));

        Assert.Equal(0, exitCode);
        Assert.True(exitedAfter < TimeSpan.FromMilliseconds(ShutdownTimeoutMs) + TimeSpan.FromSeconds(5),
            $"exited {exitedAfter} after SIGTERM (shutdown timeout {ShutdownTimeoutMs} ms)\n{process.Stdout}\n{process.Stderr}");
        // Streams that could finish inside the drain did, completely.
        foreach (var r in results.Where(r => r.Short))
        {
            Assert.True(r.Clean, "a stream that fits in the drain was cut:\n" + r.Text);
            Assert.Contains($"data: {ShortChunks - 1}\n", r.Text);
            Assert.EndsWith("data: [DONE]\n\n", r.Text);
        }
        // Streams that could not were aborted where the client can see it, never ended as if complete.
        foreach (var r in results.Where(r => !r.Short))
        {
            Assert.False(r.Clean, "a stream longer than the drain ended cleanly:\n" + r.Text);
            Assert.DoesNotContain("[DONE]", r.Text);
        }
        Assert.Equal(Streams / 2, results.Count(r => r.Short));
        Assert.Contains("shutting down", process.Stdout);

        // Nothing listens any more, and the upstream calls of the cut streams were cancelled, not orphaned.
        using var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await Assert.ThrowsAsync<SocketException>(() => probe.ConnectAsync(System.Net.IPAddress.Loopback, port));
        var upstreamClock = Stopwatch.StartNew();
        while (Volatile.Read(ref upstreamLive) > 0 && upstreamClock.Elapsed < TimeSpan.FromSeconds(10))
        {
            await Task.Delay(50);
        }
        Assert.Equal(0, Volatile.Read(ref upstreamLive));
    }
}
