using System.Text;
using LLMProxy.Forwarding;
using LLMProxy.Tests.Infrastructure;
using Microsoft.AspNetCore.Http;

namespace LLMProxy.Tests.Forwarding;

/// <summary>SPEC §13.2: include_usage added upstream for a streamed completion that did not ask, the usage-only chunk
/// taken out again (still counted), and a client that asked gets everything unchanged.</summary>
public class IncludeUsageTests
{
    private static string Inject(string body, string path = "/v1/chat/completions", string? model = null)
    {
        var bytes = Encoding.UTF8.GetBytes(body);
        var facts = RequestFacts.Read(bytes);
        Assert.True(IncludeUsage.Applies(path, facts));
        var token = model is null ? [] : ModelRewrite.EncodeModel(model);
        return Encoding.UTF8.GetString(IncludeUsage.Compose(bytes, facts, inject: true, token)!);
    }

    [Theory]
    [InlineData("{\"model\":\"m\",\"stream\":true}", "{\"stream_options\":{\"include_usage\":true},\"model\":\"m\",\"stream\":true}")]
    [InlineData(" { \"stream\" : true , \"x\":1}", " {\"stream_options\":{\"include_usage\":true}, \"stream\" : true , \"x\":1}")]
    [InlineData("{\"stream\":true,\"stream_options\":{}}", "{\"stream\":true,\"stream_options\":{\"include_usage\":true}}")]
    [InlineData("{\"stream\":true,\"stream_options\":{ \"include_obfuscation\":false}}", "{\"stream\":true,\"stream_options\":{\"include_usage\":true, \"include_obfuscation\":false}}")]
    [InlineData("{\"stream\":true,\"stream_options\":{\"include_usage\":false}}", "{\"stream\":true,\"stream_options\":{\"include_usage\":true}}")]
    [InlineData("{\"stream\":true,\"stream_options\":{\"include_usage\":null,\"a\":[1]}}", "{\"stream\":true,\"stream_options\":{\"include_usage\":true,\"a\":[1]}}")]
    [InlineData("{\"stream\":true,\"stream_options\":null}", "{\"stream\":true,\"stream_options\":{\"include_usage\":true}}")]
    [InlineData("{\"stream_options\":{\"include_usage\":true},\"stream\":true,\"stream_options\":[]}", "{\"stream_options\":{\"include_usage\":true},\"stream\":true,\"stream_options\":{\"include_usage\":true}}")]
    [InlineData("\uFEFF{\"stream\":true}", "\uFEFF{\"stream_options\":{\"include_usage\":true},\"stream\":true}")]
    [InlineData("{\"stream\":true,\"stream\\u005foptions\":{\"include\\u005fusage\":false}}", "{\"stream\":true,\"stream\\u005foptions\":{\"include\\u005fusage\":true}}")]
    public void Compose_SplicesIncludeUsage_EverythingElseByteIdentical(string body, string expected) =>
        Assert.Equal(expected, Inject(body));

    [Theory]
    [InlineData("{\"model\":\"gpt-4o\",\"stream\":true}", "{\"stream_options\":{\"include_usage\":true},\"model\":\"gpt-4o-2024\",\"stream\":true}")]
    [InlineData("{\"stream\":true,\"stream_options\":{},\"model\":\"gpt-4o\"}", "{\"stream\":true,\"stream_options\":{\"include_usage\":true},\"model\":\"gpt-4o-2024\"}")]
    [InlineData("{\"model\":\"gpt-4o\",\"stream\":true,\"stream_options\":{\"include_usage\":false}}", "{\"model\":\"gpt-4o-2024\",\"stream\":true,\"stream_options\":{\"include_usage\":true}}")]
    public void Compose_WithModelMap_BothSplicesInOneBody(string body, string expected) =>
        Assert.Equal(expected, Inject(body, model: "gpt-4o-2024"));

    [Theory]
    [InlineData("/v1/chat/completions", "{\"stream\":true,\"stream_options\":{\"include_usage\":true}}")]
    [InlineData("/v1/chat/completions", "{\"stream\":false}")]
    [InlineData("/v1/chat/completions", "{\"stream\":true,\"stream_options\":null,\"stream_options\":{\"include_usage\":true}}")]
    [InlineData("/v1/chat/completions", "{\"stream\":true,\"stream\\u005foptions\":{\"include_usage\":true}}")]
    [InlineData("/v1/chat/completions", "{\"model\":\"m\"}")]
    [InlineData("/v1/chat/completions", "not json")]
    [InlineData("/v1/responses", "{\"stream\":true}")]
    [InlineData("/v1/messages", "{\"stream\":true}")]
    public void Applies_NotForRequestsThatAskedOrCannotCarryIt(string path, string body) =>
        Assert.False(IncludeUsage.Applies(path, RequestFacts.Read(Encoding.UTF8.GetBytes(body))));

    [Fact]
    public void Applies_LegacyCompletions() =>
        Assert.Equal("{\"stream_options\":{\"include_usage\":true},\"stream\":true,\"prompt\":\"x\"}", Inject("{\"stream\":true,\"prompt\":\"x\"}", "/v1/completions"));

    private const string Role = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}],\"usage\":null}\n\n";
    private const string Word = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n";
    private const string Stop = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n";
    private const string UsageChunk = "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":17,\"completion_tokens\":9,\"total_tokens\":26,\"prompt_tokens_details\":{\"cached_tokens\":8},\"completion_tokens_details\":{\"reasoning_tokens\":2}}}\n\n";
    private const string Done = "data: [DONE]\n\n";

    /// <summary>Passes <paramref name="stream"/> through a new filter in pieces of <paramref name="piece"/> bytes, then
    /// flushes it: what the client would get, and the filter.</summary>
    private static (string Sent, UsageChunkFilter Filter) FilterInPieces(string stream, int piece)
    {
        var filter = new UsageChunkFilter();
        var bytes = Encoding.UTF8.GetBytes(stream);
        var sent = new List<byte>();
        for (var i = 0; i < bytes.Length; i += piece)
        {
            sent.AddRange(filter.Filter(bytes.AsSpan(i, Math.Min(piece, bytes.Length - i))).ToArray());
        }
        sent.AddRange(filter.Flush().ToArray());
        return (Encoding.UTF8.GetString([.. sent]), filter);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(5)]
    [InlineData(64)]
    [InlineData(100000)]
    public void Filter_DropsOnlyTheUsageChunk_AtAnySplit(int piece)
    {
        var stream = Role + Word + "data: {\"choices\":[{\"delta\":{\"content\":\"\\\"choices\\\":[]\"}}],\"usage\":{}}\r\n\r\n" + Stop + UsageChunk + Done;
        var (sent, filter) = FilterInPieces(stream, piece);
        Assert.Equal(stream.Replace(UsageChunk, "", StringComparison.Ordinal), sent);
        Assert.True(filter.Dropped);
    }

    [Theory]
    [InlineData("\r", 1)]
    [InlineData("\r", 7)]
    [InlineData("\r", 100000)]
    [InlineData("\r\n", 1)]
    [InlineData("\r\n", 2)]
    [InlineData("\r\n", 7)]
    [InlineData("\r\n", 100000)]
    public void Filter_CrAndCrLfLineEnds_DropsOnlyTheUsageChunk_AtAnySplit(string lineEnd, int piece)
    {
        // SSE lines end with CRLF, LF or CR; a CRLF cut between two reads is one line end.
        var events = new[] { Role, Word, Stop, UsageChunk, Done }.Select(e => e.Replace("\n", lineEnd, StringComparison.Ordinal)).ToArray();
        var stream = string.Concat(events);
        var (sent, filter) = FilterInPieces(stream, piece);
        Assert.Equal(stream.Replace(events[3], "", StringComparison.Ordinal), sent);
        Assert.True(filter.Dropped);
    }

    [Fact]
    public void Filter_CrEndedEventPassesAtOnce_SplitCrLfIsNotABlankLine()
    {
        var filter = new UsageChunkFilter();
        Assert.Equal("data: a\r\r", Encoding.UTF8.GetString(filter.Filter("data: a\r\r"u8).Span));
        Assert.Equal("\n", Encoding.UTF8.GetString(filter.Filter("\n"u8).Span)); // the rest of that blank line's CRLF

        // "data: b" CR | LF: one line end; had the LF counted as a second, the event would have ended here.
        Assert.Equal(0, filter.Filter("data: b\r"u8).Length);
        Assert.Equal(0, filter.Filter("\n"u8).Length);
        Assert.Equal("data: b\r\n\r\n", Encoding.UTF8.GetString(filter.Filter("\r\n"u8).Span));

        // A usage chunk ended by CR is dropped with the LF that completes its CRLF in the next read.
        Assert.Equal(0, filter.Filter(Encoding.UTF8.GetBytes(UsageChunk.Replace("\n\n", "\r\n\r", StringComparison.Ordinal))).Length);
        Assert.Equal("data: c\n\n", Encoding.UTF8.GetString(filter.Filter("\ndata: c\n\n"u8).Span));
        Assert.True(filter.Dropped);
    }

    [Fact]
    public void Filter_EventPassesAsSoonAsItsBlankLineArrives_LongEventsStreamThrough()
    {
        var filter = new UsageChunkFilter();
        Assert.Equal(0, filter.Filter("data: {\"choices\":[{\"delta\""u8).Length);
        Assert.Equal("data: {\"choices\":[{\"delta\":{}}]}\n\n", Encoding.UTF8.GetString(filter.Filter(":{}}]}\n\n"u8).Span));

        var huge = new byte[UsageChunkFilter.MaxHeld + 10];
        huge.AsSpan().Fill((byte)'x');
        Assert.Equal(huge.Length, filter.Filter(huge).Length);
        Assert.Equal(3, filter.Filter("y\n\n"u8).Length);
        Assert.False(filter.Dropped);
    }

    private static Func<HttpContext, Task> SseUpstream(string body, int piece) => async context =>
    {
        context.Response.ContentType = "text/event-stream";
        var bytes = Encoding.UTF8.GetBytes(body);
        for (var i = 0; i < bytes.Length; i += piece)
        {
            await context.Response.Body.WriteAsync(bytes.AsMemory(i, Math.Min(piece, bytes.Length - i)));
            await context.Response.Body.FlushAsync();
        }
    };

    [Fact]
    public async Task Pipeline_ClientDidNotAsk_UpstreamGetsIncludeUsage_ClientGetsNoUsageChunk_TokensCounted()
    {
        await using var upstream = await ScriptedUpstream.StartAsync(SseUpstream(Role + Word + Stop + UsageChunk + Done, 7));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config($"- name: u\n  url: \"{upstream.Url}\"", "- name: u"));
        const string Body = "{\"model\":\"m\", \"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"h\\u00e9\"}]}";

        using var response = await proxy.Client.PostAsync("/v1/chat/completions", new StringContent(Body, Encoding.UTF8, "application/json"));
        Assert.Equal(Role + Word + Stop + Done, await response.Content.ReadAsStringAsync());

        var sent = Assert.Single(upstream.Received);
        var expected = "{\"stream_options\":{\"include_usage\":true}," + Body[1..];
        Assert.Equal(expected, Encoding.UTF8.GetString(sent.Body));
        Assert.Equal(Encoding.UTF8.GetByteCount(expected).ToString(System.Globalization.CultureInfo.InvariantCulture), sent.Header("Content-Length"));
        await AssertSampleAsync(proxy.Admin, "llmproxy_upstream_tokens_total{group=\"g\",upstream=\"u\",type=\"prompt\"}", 17);
        var metrics = await proxy.Admin.GetStringAsync("/metrics");
        AssertSample(metrics, "llmproxy_upstream_tokens_total{group=\"g\",upstream=\"u\",type=\"completion\"}", 9);
        AssertSample(metrics, "llmproxy_upstream_tokens_total{group=\"g\",upstream=\"u\",type=\"cached\"}", 8);
        AssertSample(metrics, "llmproxy_upstream_tokens_total{group=\"g\",upstream=\"u\",type=\"reasoning\"}", 2);
    }

    [Fact]
    public async Task Pipeline_EventsEndedByBareCr_EachReachesTheClientAtOnce_UsageChunkStillRemoved()
    {
        var first = Role.Replace("\n", "\r", StringComparison.Ordinal);
        var rest = string.Concat(new[] { Word, Stop, UsageChunk, Done }.Select(e => e.Replace("\n", "\r", StringComparison.Ordinal)));
        var firstSeen = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var upstream = await ScriptedUpstream.StartAsync(async context =>
        {
            context.Response.ContentType = "text/event-stream";
            await context.Response.WriteAsync(first);
            await context.Response.Body.FlushAsync();
            // The rest only once the client has the first event: a filter that waits for more bytes would hang here.
            await firstSeen.Task.WaitAsync(TimeSpan.FromSeconds(10));
            await context.Response.WriteAsync(rest);
        });
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config($"- name: u\n  url: \"{upstream.Url}\"", "- name: u"));

        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
        {
            Content = new StringContent("{\"model\":\"m\",\"stream\":true}", Encoding.UTF8, "application/json"),
        };
        using var response = await proxy.Client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        await using var stream = await response.Content.ReadAsStreamAsync();
        var got = new List<byte>();
        var buffer = new byte[4096];
        using (var cts = new CancellationTokenSource(TimeSpan.FromSeconds(5)))
        {
            while (got.Count < first.Length)
            {
                var n = await stream.ReadAsync(buffer, cts.Token);
                Assert.NotEqual(0, n);
                got.AddRange(buffer.AsSpan(0, n).ToArray());
            }
        }
        Assert.Equal(first, Encoding.UTF8.GetString([.. got]));
        firstSeen.SetResult();
        using var reader = new StreamReader(stream);
        Assert.Equal(rest.Replace(UsageChunk.Replace("\n", "\r", StringComparison.Ordinal), "", StringComparison.Ordinal), await reader.ReadToEndAsync());
        Assert.Contains("stream_options", Encoding.UTF8.GetString(Assert.Single(upstream.Received).Body), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Pipeline_ClientAsked_BodyAndStreamUnchanged()
    {
        await using var upstream = await ScriptedUpstream.StartAsync(SseUpstream(Role + Word + Stop + UsageChunk + Done, 3));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config($"- name: u\n  url: \"{upstream.Url}\"", "- name: u"));
        const string Body = "{\"model\":\"m\",\"stream\":true,\"stream_options\":{\"include_usage\":true}}";

        using var response = await proxy.Client.PostAsync("/v1/chat/completions", new StringContent(Body, Encoding.UTF8, "application/json"));
        Assert.Equal(Role + Word + Stop + UsageChunk + Done, await response.Content.ReadAsStringAsync());
        Assert.Equal(Body, Encoding.UTF8.GetString(Assert.Single(upstream.Received).Body));
        await AssertSampleAsync(proxy.Admin, "llmproxy_upstream_tokens_total{group=\"g\",upstream=\"u\",type=\"completion\"}", 9);
    }

    [Fact]
    public async Task Pipeline_NonStreamedAndOtherPaths_BodyUnchanged()
    {
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u"));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config($"- name: u\n  url: \"{upstream.Url}\"", "- name: u"));

        foreach (var (path, body) in new[] { ("/v1/chat/completions", "{\"model\":\"m\",\"stream\":false}"), ("/v1/messages", "{\"model\":\"m\",\"stream\":true}") })
        {
            using var response = await proxy.Client.PostAsync(path, new StringContent(body, Encoding.UTF8, "application/json"));
            Assert.True(response.IsSuccessStatusCode);
            Assert.True(upstream.Received.TryDequeue(out var sent));
            Assert.Equal(body, Encoding.UTF8.GetString(sent!.Body));
        }
    }

    [Fact]
    public async Task Pipeline_ModelMapAndInjection_OneAttemptBody_RetryGetsItsOwn()
    {
        var failMapped = 1;
        await using var mapped = await ScriptedUpstream.StartAsync(ctx => Volatile.Read(ref failMapped) == 1
            ? ScriptedUpstream.Json("mapped", 503)(ctx) : SseUpstream(Role + Stop + UsageChunk + Done, 4)(ctx));
        await using var plain = await ScriptedUpstream.StartAsync(SseUpstream(Role + Word + Stop + UsageChunk + Done, 4));
        var upstreams = $"- name: mapped\n  url: \"{mapped.Url}\"\n  modelMap:\n    \"gpt-4o\": \"gpt-4o-2024-08-06\"\n- name: plain\n  url: \"{plain.Url}\"";
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(upstreams, "- name: mapped\n- name: plain", groupExtra: "balance:\n  strategy: roundrobin"));
        const string Body = "{\"model\":\"gpt-4o\",\"stream\":true,\"stream_options\":{}}";

        using (var response = await proxy.Client.PostAsync("/v1/chat/completions", new StringContent(Body, Encoding.UTF8, "application/json")))
        {
            // Whichever member went first, the client sees the stream without the usage chunk.
            var text = await response.Content.ReadAsStringAsync();
            Assert.DoesNotContain("\"usage\":{", text, StringComparison.Ordinal);
            Assert.EndsWith(Done, text, StringComparison.Ordinal);
        }
        Volatile.Write(ref failMapped, 0);
        using (var response = await proxy.Client.PostAsync("/v1/chat/completions", new StringContent(Body, Encoding.UTF8, "application/json")))
        {
            Assert.DoesNotContain("\"usage\":{", await response.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }

        const string Injected = "{\"model\":\"gpt-4o\",\"stream\":true,\"stream_options\":{\"include_usage\":true}}";
        Assert.All(mapped.Received, r => Assert.Equal(Injected.Replace("\"gpt-4o\"", "\"gpt-4o-2024-08-06\"", StringComparison.Ordinal), Encoding.UTF8.GetString(r.Body)));
        Assert.All(plain.Received, r => Assert.Equal(Injected, Encoding.UTF8.GetString(r.Body)));
        Assert.NotEmpty(mapped.Received);
        Assert.NotEmpty(plain.Received);
    }

    /// <summary>An upstream (or a buffering gateway before it) may frame its stream with a Content-Length instead of
    /// chunks. The client gets fewer bytes than that once the usage chunk is taken out, so the length is not passed on:
    /// the answer arrives whole and ends cleanly, instead of being cut short of a length the proxy copied.</summary>
    [Fact]
    public async Task Pipeline_UpstreamDeclaresContentLength_UsageChunkRemoved_ClientGetsWholeStream()
    {
        const string Body = Role + Word + Stop + UsageChunk + Done;
        await using var upstream = await ScriptedUpstream.StartAsync(async context =>
        {
            context.Response.ContentType = "text/event-stream";
            context.Response.ContentLength = Encoding.UTF8.GetByteCount(Body);
            await context.Response.WriteAsync(Body);
        });
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config($"- name: u\n  url: \"{upstream.Url}\"", "- name: u"));

        using var response = await proxy.Client.PostAsync("/v1/chat/completions", new StringContent("{\"model\":\"m\",\"stream\":true}", Encoding.UTF8, "application/json"));
        Assert.Equal(Role + Word + Stop + Done, await response.Content.ReadAsStringAsync());
        Assert.True(response.Headers.TransferEncodingChunked);
        await AssertSampleAsync(proxy.Admin, "llmproxy_upstream_tokens_total{group=\"g\",upstream=\"u\",type=\"completion\"}", 9);
    }

    /// <summary>An injected stream from a hostile upstream — one endless event, garbage, no usage, no blank line at the
    /// end — reaches the client whole and promptly.</summary>
    [Fact]
    public async Task Pipeline_HostileStream_PassesWhole_NothingCounted()
    {
        var body = "data: " + new string('{', 200_000) + "\n\n" + "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":99999999999999999999}}\n\n"
            + "data: " + new string('x', UsageChunkFilter.MaxHeld * 3) + "\n\ndata: trailing event without blank line";
        await using var upstream = await ScriptedUpstream.StartAsync(SseUpstream(body, 1000));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config($"- name: u\n  url: \"{upstream.Url}\"", "- name: u"));

        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        using var response = await proxy.Client.PostAsync("/v1/chat/completions", new StringContent("{\"stream\":true}", Encoding.UTF8, "application/json"), cts.Token);
        var text = await response.Content.ReadAsStringAsync(cts.Token);
        // The garbage usage-only chunk is still "usage-only" in shape and is taken out; everything else arrives.
        Assert.Equal(body.Replace("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":99999999999999999999}}\n\n", "", StringComparison.Ordinal), text);
        Assert.Equal(0, Sum(await proxy.Admin.GetStringAsync("/metrics"), "llmproxy_upstream_tokens_total"));
    }

    /// <summary>The filter holds nothing back: the upstream sends its next event only after the client has read the
    /// previous one, which deadlocks (and times out) if any event waited for a later write.</summary>
    [Fact]
    public async Task Pipeline_InjectedStream_EachEventReachesClientBeforeTheNextIsSent()
    {
        var read = new[] { new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously), new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously) };
        await using var upstream = await ScriptedUpstream.StartAsync(async context =>
        {
            context.Response.ContentType = "text/event-stream";
            foreach (var (evt, gate) in new[] { (Role, read[0].Task), (Word, read[1].Task) })
            {
                await context.Response.WriteAsync(evt);
                await context.Response.Body.FlushAsync();
                await gate.WaitAsync(TimeSpan.FromSeconds(10));
            }
            await context.Response.WriteAsync(Stop + UsageChunk + Done);
        });
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config($"- name: u\n  url: \"{upstream.Url}\"", "- name: u"));

        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions") { Content = new StringContent("{\"stream\":true}", Encoding.UTF8, "application/json") };
        using var response = await proxy.Client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(5));
        Assert.Equal(Role.TrimEnd('\n'), await reader.ReadLineAsync(cts.Token));
        read[0].SetResult();
        Assert.Equal("", await reader.ReadLineAsync(cts.Token));
        Assert.Equal(Word.TrimEnd('\n'), await reader.ReadLineAsync(cts.Token));
        read[1].SetResult();
        Assert.Equal("\n" + Stop + Done, await reader.ReadToEndAsync(cts.Token));
    }

    [Theory]
    [InlineData("/v1/chat/completions", "application/json", true)]
    [InlineData("/v1/completions", "application/json; charset=utf-8", true)]
    [InlineData("/v1/chat/completions", "APPLICATION/JSON", true)]
    [InlineData("/v1/chat/completions", "application/jsonx", false)]
    [InlineData("/v1/chat/completions", "text/plain", false)]
    [InlineData("/v1/chat/completions", null, false)]
    [InlineData("/v1/embeddings", "application/json", false)]
    public void MayApply_OnlyJsonBodiesToCompletionsPaths(string path, string? contentType, bool expected) =>
        Assert.Equal(expected, IncludeUsage.MayApply(path, contentType));
}
