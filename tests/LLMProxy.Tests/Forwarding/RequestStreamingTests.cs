using System.Net;
using LLMProxy.Tests.Infrastructure;
using Microsoft.AspNetCore.Http;

namespace LLMProxy.Tests.Forwarding;

public class RequestStreamingTests
{
    /// <summary>A request body the client writes in two parts, the second only when told to.</summary>
    private sealed class TwoPartContent(int firstPartSize, TaskCompletionSource secondPart) : HttpContent
    {
        protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context)
        {
            await stream.WriteAsync(new byte[firstPartSize]);
            await stream.FlushAsync();
            await secondPart.Task.WaitAsync(TimeSpan.FromSeconds(60));
            await stream.WriteAsync("second-part"u8.ToArray());
        }

        protected override bool TryComputeLength(out long length)
        {
            length = -1;
            return false;
        }
    }

    [Theory]
    // Small: the part would fit the upstream connection's write buffer, where it waited for more until the proxy
    // flushed every piece of a streamed body (Runtime/OneSendHandler FlushingContent). Large: more than any buffer.
    [InlineData(1000)]
    [InlineData(512 * 1024)]
    public async Task RequestBody_Chunked_StreamsToUpstreamBeforeTheClientFinishes(int firstPartSize)
    {
        var firstSeen = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var upstreamRead = -1; // -1: the request has not reached the upstream (for the message of a timeout)
        await using var upstream = await ScriptedUpstream.StartAsync(async ctx =>
        {
            Volatile.Write(ref upstreamRead, 0);
            var buffer = new byte[firstPartSize];
            for (int read; upstreamRead < firstPartSize && (read = await ctx.Request.Body.ReadAsync(buffer.AsMemory(upstreamRead))) > 0;)
            {
                Volatile.Write(ref upstreamRead, upstreamRead + read);
            }
            firstSeen.SetResult();
            using var rest = new MemoryStream();
            await ctx.Request.Body.CopyToAsync(rest);
            await ctx.Response.WriteAsync("got:" + System.Text.Encoding.ASCII.GetString(rest.ToArray()));
        }, recordBody: false);
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config($"- name: u1\n  url: \"{upstream.Url}\"", "- name: u1"));

        var secondPart = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var call = proxy.Client.PostAsync("/v1/upload", new TwoPartContent(firstPartSize, secondPart));
        // The upstream reads the whole first part while the client still holds back the second: the body is
        // passed on as it arrives, not collected first, and not held in a buffer until more comes.
        try
        {
            await firstSeen.Task.WaitAsync(TimeSpan.FromSeconds(45)); // generous: 2 busy cores under the parallel suite
        }
        catch (TimeoutException)
        {
            // Where the body stopped, for the next time this fails (it once did, in one of many loaded full runs).
            Assert.Fail(Volatile.Read(ref upstreamRead) < 0
                ? $"the request never reached the upstream in 45 s (client call {call.Status})"
                : $"the upstream read {Volatile.Read(ref upstreamRead)} of the first {firstPartSize} bytes in 45 s (client call {call.Status})");
        }
        secondPart.SetResult();

        using var response = await call;
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("got:second-part", await response.Content.ReadAsStringAsync());
    }

    /// <summary>A body of a length not known in advance — HTTP/1.1 chunked, or HTTP/2 without content-length, which SDKs
    /// on HTTP/2 may send — is read up to the replay limit: its facts count (model), and a failed attempt is replayed on
    /// another member with the whole body.</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task RequestBody_UnknownLength_Buffered_FactsRead_ReplayedOnAnotherMember(bool http2)
    {
        const string body = """{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}""";
        await using var ups = await Upstreams.StartAsync(("bad", ScriptedUpstream.Json("bad", 500)), ("good", ScriptedUpstream.Json("good")));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(ups.Yaml(), ups.Members(), groupExtra: "balance:\n  strategy: roundrobin"));
        using var client = new HttpClient { BaseAddress = new Uri(proxy.ForwardUrl()) };

        for (var i = 0; i < 2; i++) // round robin: one of the two starts on the failing member
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
            {
                Content = new StreamContent(new NonSeekable(System.Text.Encoding.UTF8.GetBytes(body))),
                Version = http2 ? HttpVersion.Version20 : HttpVersion.Version11,
                VersionPolicy = HttpVersionPolicy.RequestVersionExact,
            };
            using var response = await client.SendAsync(request);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.Equal("good", response.UpstreamName());
        }
        Assert.InRange(ups["bad"].Count, 1, 2); // at least one request was replayed after the failing member's 500
        Assert.All(ups["good"].Received.Concat(ups["bad"].Received), r => Assert.Equal(body, System.Text.Encoding.UTF8.GetString(r.Body)));
        Assert.Equal(2, proxy.Logs.Entries.Count(e => e.Category == "LLMProxy.Access" && e.Message.Contains("model=gpt-4o-mini", StringComparison.Ordinal)));
    }

    /// <summary>Longer than the replay limit, a body of unknown length goes to one attempt: the part read while finding
    /// that out first, the rest behind it, byte for byte.</summary>
    [Fact]
    public async Task RequestBody_UnknownLengthOverTheReplayLimit_OneAttempt_ReachesTheUpstreamWhole()
    {
        var sent = new byte[5 * 1024 * 1024 + 12345];
        new Random(7).NextBytes(sent);
        await using var ups = await Upstreams.StartAsync(("a", ScriptedUpstream.Json("a")), ("b", ScriptedUpstream.Json("b")));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(ups.Yaml(), ups.Members()));

        using var response = await proxy.Client.PostAsync("/v1/files", new StreamContent(new NonSeekable(sent)));

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var received = Assert.Single(ups["a"].Received.Concat(ups["b"].Received));
        Assert.Equal(sent.Length, received.Body.Length);
        Assert.True(sent.AsSpan().SequenceEqual(received.Body), "the body arrived changed");
    }

    /// <summary>A stream that cannot tell its length, so the body goes out chunked (HTTP/1.1) or without content-length.</summary>
    private sealed class NonSeekable(byte[] data) : MemoryStream(data)
    {
        public override bool CanSeek => false;
    }
}
