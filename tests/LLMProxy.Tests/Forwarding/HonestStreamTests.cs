using System.Net;
using System.Text;
using LLMProxy.Tests.Infrastructure;
using Microsoft.AspNetCore.Http;

namespace LLMProxy.Tests.Forwarding;

/// <summary>SPEC §13.6: a broken SSE answer ends with one honest error event and no clean end; debug headers.</summary>
public class HonestStreamTests
{
    private const string Notice =
        "data: {\"error\":{\"message\":\"The upstream connection broke before the answer was complete.\",\"type\":\"llmproxy_error\",\"code\":\"upstream_broken_stream\"}}\n\n";

    /// <summary>
    /// An upstream that sends <paramref name="sent"/> in one write, flushes, then drops the connection once the client has
    /// <paramref name="passedOn"/> of it (<see cref="Received"/>; all of it unless said — the include_usage filter holds
    /// an event the break cut short). Dropping it after a fixed pause raced a busy machine: the reset overtook bytes the
    /// proxy had not read yet, and the client got a 502 instead of the broken stream under test.
    /// </summary>
    private sealed class BreaksAfter(string sent, string contentType = "text/event-stream", string? passedOn = null)
    {
        private readonly TaskCompletionSource _delivered = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public Func<HttpContext, Task> Handler => async ctx =>
        {
            ctx.Response.ContentType = contentType;
            await ctx.Response.WriteAsync(sent);
            await ctx.Response.Body.FlushAsync();
            try
            {
                await _delivered.Task.WaitAsync(TimeSpan.FromSeconds(5));
            }
            catch (TimeoutException)
            {
                // The client never got what it should have first: say so in the text the test compares (unless the
                // proxy's idle timeout cut the stream already — the text is wrong either way), then break as asked.
                await ctx.Response.WriteAsync("<the client never received what this test expected first>");
                await ctx.Response.Body.FlushAsync();
            }
            ctx.Abort();
        };

        /// <summary>What the client has received so far.</summary>
        public void Received(string text)
        {
            if (text.StartsWith(passedOn ?? sent, StringComparison.Ordinal))
            {
                _delivered.TrySetResult();
            }
        }
    }

    /// <summary>Everything the client received, and whether the body ended cleanly (false = it broke).</summary>
    private static async Task<(string Text, bool Clean)> DrainAsync(HttpResponseMessage response, Action<string>? received = null)
    {
        var stream = await response.Content.ReadAsStreamAsync();
        var text = new StringBuilder();
        var decoder = Encoding.UTF8.GetDecoder();
        var buffer = new byte[1024];
        var chars = new char[Encoding.UTF8.GetMaxCharCount(buffer.Length)];
        try
        {
            int n;
            while ((n = await stream.ReadAsync(buffer).AsTask().WaitAsync(TimeSpan.FromSeconds(10))) > 0)
            {
                text.Append(chars, 0, decoder.GetChars(buffer, 0, n, chars, 0));
                received?.Invoke(text.ToString());
            }
            return (text.ToString(), true);
        }
        catch (IOException)
        {
            return (text.ToString(), false);
        }
    }

    private static async Task<(HttpResponseMessage Response, string Text, bool Clean)> StreamAsync(TestProxy proxy, BreaksAfter? upstream = null,
        string path = "/v1/chat/completions")
    {
        var response = await proxy.Client.SendAsync(new HttpRequestMessage(HttpMethod.Post, path)
        {
            Content = new StringContent("{\"stream\":true}", Encoding.UTF8, "application/json"),
        }, HttpCompletionOption.ResponseHeadersRead);
        var (text, clean) = await DrainAsync(response, upstream is null ? null : upstream.Received);
        return (response, text, clean);
    }

    [Fact]
    public async Task Sse_BreaksBetweenEvents_OneFinalErrorEvent_ThenAbort_NoDone()
    {
        var breaking = new BreaksAfter("data: {\"n\":1}\n\n");
        await using var ups = await Upstreams.StartAsync(("u1", breaking.Handler));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(ups.Yaml(), ups.Members()));

        var (response, text, clean) = await StreamAsync(proxy, breaking);
        using var _ = response;

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.False(clean, "the client saw a clean end of a broken stream");
        Assert.Equal("data: {\"n\":1}\n\n" + Notice, text);
        Assert.DoesNotContain("[DONE]", text);
        await Eventually.WaitUntilAsync(() => Task.FromResult(proxy.Logs.AllText.Contains("outcome=upstream_broken_stream")), TimeSpan.FromSeconds(5));
    }

    [Fact]
    public async Task Sse_BreaksInsideAnEvent_ErrorEventStartsAfterABlankLine()
    {
        var breaking = new BreaksAfter("data: {\"n\":1}\n\ndata: {\"n\":2,\"te", passedOn: "data: {\"n\":1}\n\n");
        await using var ups = await Upstreams.StartAsync(("u1", breaking.Handler));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(ups.Yaml(), ups.Members()));

        var (response, text, clean) = await StreamAsync(proxy, breaking);
        using var _ = response;

        Assert.False(clean);
        // The cut event is closed by the blank line, so the error is an event of its own.
        Assert.Equal("data: {\"n\":1}\n\ndata: {\"n\":2,\"te\n\n" + Notice, text);
    }

    /// <summary>Anthropic's SDKs act only on named events: an event without <c>event:</c> in a Messages stream is
    /// dropped unread (anthropic-sdk-python's Stream raises only for <c>event: error</c>), so the notice is named
    /// <c>error</c> there — Anthropic's own name for an error in a stream, which OpenAI's SDKs raise on too.</summary>
    [Theory]
    [InlineData("/v1/messages")]
    [InlineData("/anthropic/v1/messages/")]
    public async Task Sse_AnthropicMessagesStream_TheNoticeIsANamedErrorEvent(string path)
    {
        const string Sent = "event: message_start\ndata: {\"type\":\"message_start\"}\n\n";
        var breaking = new BreaksAfter(Sent);
        await using var ups = await Upstreams.StartAsync(("u1", breaking.Handler));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(ups.Yaml(), ups.Members()));

        var (response, text, clean) = await StreamAsync(proxy, breaking, path);
        using var _ = response;

        Assert.False(clean);
        Assert.Equal(Sent + "event: error\n" + Notice, text);
    }

    [Fact]
    public async Task Json_BreaksMidBody_NoEventAdded_StillAborted()
    {
        var breaking = new BreaksAfter("{\"choices\":[", "application/json");
        await using var ups = await Upstreams.StartAsync(("u1", breaking.Handler));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(ups.Yaml(), ups.Members()));

        var (response, text, clean) = await StreamAsync(proxy, breaking);
        using var _ = response;

        Assert.False(clean);
        Assert.Equal("{\"choices\":[", text);
    }

    [Fact]
    public async Task Sse_CompleteAnswer_Untouched()
    {
        await using var ups = await Upstreams.StartAsync(("u1", async ctx =>
        {
            ctx.Response.ContentType = "text/event-stream";
            await ctx.Response.WriteAsync("data: {\"n\":1}\n\ndata: [DONE]\n\n");
        }));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(ups.Yaml(), ups.Members()));

        var (response, text, clean) = await StreamAsync(proxy);
        using var _ = response;

        Assert.True(clean);
        Assert.Equal("data: {\"n\":1}\n\ndata: [DONE]\n\n", text);
    }

    [Fact]
    public async Task DebugHeaders_NameAndAttempts_OnByDefault_CountRetries()
    {
        await using var ups = await Upstreams.StartAsync(("bad", ScriptedUpstream.Json("bad", 503)), ("good", ScriptedUpstream.Json("good")));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(ups.Yaml(), ups.Members(), "balance:\n  strategy: roundrobin"));

        var seen = new List<(string Upstream, string Attempts)>();
        for (var i = 0; i < 4; i++)
        {
            using var r = await proxy.Client.GetAsync("/v1/models");
            Assert.Equal(HttpStatusCode.OK, r.StatusCode);
            seen.Add((r.Headers.GetValues("X-LLMProxy-Upstream").Single(), r.Headers.GetValues("X-LLMProxy-Attempts").Single()));
        }

        // Every request tries bad first (the rotation also turns on the retry's pick) and is answered by good.
        Assert.All(seen, s => Assert.Equal(("good", "2"), s));
    }

    [Fact]
    public async Task DebugHeaders_NeverTheKeyOrUrl_OffWhenDisabled()
    {
        await using var ups = await Upstreams.StartAsync(("u1", ScriptedUpstream.Json("u1")));
        var yaml = ups.Yaml(_ => "auth:\n  type: bearer\n  token: sk-secret-123");
        await using (var on = await TestProxy.StartAsync(TestProxy.Config(yaml, ups.Members())))
        {
            using var r = await on.Client.GetAsync("/v1/models");
            var all = string.Join('\n', r.Headers.Select(h => h.Key + ": " + string.Join(",", h.Value)));
            Assert.Equal("u1", r.Headers.GetValues("X-LLMProxy-Upstream").Single());
            Assert.Equal("1", r.Headers.GetValues("X-LLMProxy-Attempts").Single());
            Assert.DoesNotContain("sk-secret-123", all);
            Assert.DoesNotContain(ups["u1"].Url, all);
        }

        await using var off = await TestProxy.StartAsync(TestProxy.Config(yaml, ups.Members(), forwardExtra: "debugHeaders: false"));
        using var quiet = await off.Client.GetAsync("/v1/models");
        Assert.Equal(HttpStatusCode.OK, quiet.StatusCode);
        Assert.False(quiet.Headers.Contains("X-LLMProxy-Upstream"));
        Assert.False(quiet.Headers.Contains("X-LLMProxy-Attempts"));
    }

    /// <summary>An upstream body whose one read completes when the test says so, from whichever thread it says.</summary>
    private sealed class GatedBody(TaskCompletionSource<int>? gate) : LLMProxy.Forwarding.ReplacedContent.ReadOnlyStream
    {
        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            if (gate is null)
            {
                "data: {}\n\n"u8.CopyTo(buffer.Span);
                return new ValueTask<int>(10);
            }
            return new ValueTask<int>(gate.Task);
        }
    }

    private sealed class GatedContent(TaskCompletionSource<int>? gate) : HttpContent
    {
        protected override Task<Stream> CreateContentReadStreamAsync() => Task.FromResult<Stream>(new GatedBody(gate));
        protected override Task SerializeToStreamAsync(Stream stream, System.Net.TransportContext? context) => throw new NotSupportedException();
        protected override bool TryComputeLength(out long length)
        {
            length = 0;
            return false;
        }
    }

    /// <summary>Where the reader of the client's body goes on after a read: the thread, and whether it is the pool's.</summary>
    private static async Task<(int Thread, bool Pool, int Read)> ReadOnceAsync(Stream body)
    {
        var read = await body.ReadAsync(new byte[64]).ConfigureAwait(false);
        return (Environment.CurrentManagedThreadId, Thread.CurrentThread.IsThreadPoolThread, read);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task Sse_ChunkArrivingOnAThreadOutsideThePool_ContinuesOnThePool_WhenThatThreadIsBusy(bool busy)
    {
        // With inline socket completions the upstream's chunk arrives on a socket event thread: when that thread is busy
        // with chunks, the rest of their way to the client leaves it, or every stream's chunk waits behind the others.
        var gate = new TaskCompletionSource<int>();
        var asked = 0;
        var body = await new LLMProxy.Forwarding.HonestSseContent(new GatedContent(gate), () => ++asked > 0 && busy).ReadAsStreamAsync();
        var reading = ReadOnceAsync(body);
        Assert.False(reading.IsCompleted);
        var socketThread = new Thread(() => gate.SetResult(0)) { IsBackground = true, Name = "socket event thread (test)" };
        socketThread.Start();
        var (thread, pool, read) = await reading;
        Assert.Equal(0, read);
        Assert.Equal(1, asked);
        if (busy)
        {
            Assert.True(pool, "the chunk's way on after the read stayed on the thread that completed it");
            Assert.NotEqual(socketThread.ManagedThreadId, thread);
        }
        else
        {
            // Not busy: the thread that saw the bytes passes them on itself (no wake-up of a pool thread per chunk).
            Assert.Equal(socketThread.ManagedThreadId, thread);
        }
    }

    [Fact]
    public async Task Sse_DataAlreadyThere_NoHop()
    {
        // A read the upstream's buffer answers at once (the copier's read after its zero-byte wait) costs no thread hop.
        var body = await new LLMProxy.Forwarding.HonestSseContent(new GatedContent(null),
            () => throw new InvalidOperationException("asked to hop for a read that did not wait")).ReadAsStreamAsync();
        var reading = ReadOnceAsync(body);
        Assert.True(reading.IsCompleted);
        Assert.Equal(10, (await reading).Read);
    }

    [Fact]
    public void ChunkRate_BusyOnlyAfterAWindowAboveTheLimit_AndQuietAgainAfterOneBelow()
    {
        // 1,000 ticks per second, a window of 100 ticks, a limit of 50 chunks per second (5 per window).
        var rate = new LLMProxy.Forwarding.ChunkRate(limitPerSecond: 50, window: 100, ticksPerSecond: 1_000);
        var t = 0L;
        for (var i = 0; i < 10; i++, t += 9)
        {
            Assert.False(rate.Count(t)); // 10 chunks in the first 90 ticks: no window complete yet
        }
        Assert.True(rate.Count(t += 10)); // the window closes at 100 ticks with 11 chunks: 110 per second
        Assert.True(rate.Count(t += 50)); // judged only when the next window closes
        Assert.False(rate.Count(t += 60)); // 2 chunks in 110 ticks: 18 per second
        Assert.False(rate.Count(t += 5_000)); // one chunk after a quiet spell
        for (var i = 0; i < 5; i++)
        {
            Assert.False(rate.Count(t += 20)); // exactly 50 per second is not above the limit
        }
        Assert.False(rate.Count(t += 1));
    }

    /// <summary>Asks <see cref="LLMProxy.Forwarding.ChunkRelief.ShouldHop"/> as fast as it can for two of its windows
    /// (bounded at 10 s); whether any answer was yes.</summary>
    private static bool HopsUnderAFlood()
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var limit = 2 * LLMProxy.Forwarding.ChunkRelief.Window;
        var hopped = false;
        while (clock.Elapsed < limit || (!hopped && clock.Elapsed < TimeSpan.FromSeconds(10) && !Thread.CurrentThread.IsThreadPoolThread))
        {
            hopped |= LLMProxy.Forwarding.ChunkRelief.ShouldHop();
        }
        return hopped;
    }

    [Fact]
    public async Task ChunkRelief_ManyChunksOnAThreadOutsideThePool_Hop_NeverOnAPoolThread()
    {
        // A dedicated thread stands in for the socket event thread: millions of chunks per second through it are far
        // above the limit. The same flood on a pool thread never hops: it is already where a hop would take it.
        var outside = false;
        var eventThread = new Thread(() => outside = HopsUnderAFlood()) { IsBackground = true };
        eventThread.Start();
        eventThread.Join();
        Assert.True(outside, "a thread outside the pool carrying a flood of chunks was never relieved");
        Assert.False(await Task.Run(HopsUnderAFlood));
    }
}
