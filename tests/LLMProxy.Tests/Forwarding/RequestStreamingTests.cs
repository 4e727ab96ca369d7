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
}
