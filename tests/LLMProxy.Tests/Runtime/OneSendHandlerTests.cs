using System.Net;
using System.Net.Http.Headers;
using System.Text;
using LLMProxy.Runtime;
using LLMProxy.Tests.Infrastructure;

namespace LLMProxy.Tests.Runtime;

public class OneSendHandlerTests
{
    private sealed class Body(byte[] bytes, int offset, int count) : IBufferedBody
    {
        public ArraySegment<byte> AttemptBody { get; } = new(bytes, offset, count);
    }

    /// <summary>What reached the inner handler (SocketsHttpHandler's place).</summary>
    private sealed class Capture : HttpMessageHandler
    {
        public HttpContent? Content { get; private set; }
        public byte[] Bytes { get; private set; } = [];

        protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            Content = request.Content;
            Bytes = request.Content is null ? [] : await request.Content.ReadAsByteArrayAsync(cancellationToken);
            return new HttpResponseMessage(HttpStatusCode.OK);
        }
    }

    /// <summary>Stands in for YARP's content: streams the body, carries the content headers the transforms set.</summary>
    private static HttpRequestMessage Request(byte[] streamed)
    {
        var content = new StreamContent(new MemoryStream(streamed));
        content.Headers.ContentType = new MediaTypeHeaderValue("application/json") { CharSet = "utf-8" };
        content.Headers.ContentLanguage.Add("de");
        content.Headers.ContentLength = streamed.Length;
        return new HttpRequestMessage(HttpMethod.Post, "http://127.0.0.1:1/v1/chat/completions") { Content = content };
    }

    private static async Task<Capture> SendAsync(HttpRequestMessage request)
    {
        var capture = new Capture();
        using var invoker = new HttpMessageInvoker(new OneSendHandler(capture));
        using var response = await invoker.SendAsync(request, CancellationToken.None);
        return capture;
    }

    [Fact]
    public async Task SmallBufferedBody_SentAsOneByteArrayContent_WithTheContentHeaders()
    {
        Assert.True(OneSendHandler.Enabled, $"{OneSendHandler.Variable} is set in the test environment");
        var buffer = new byte[64];
        var json = """{"model":"gpt-4o-mini","messages":[]}"""u8.ToArray();
        json.CopyTo(buffer, 7);
        using var request = Request(json);
        OneSendHandler.Offer(request, new Body(buffer, 7, json.Length));

        var capture = await SendAsync(request);

        Assert.IsType<ByteArrayContent>(capture.Content);
        Assert.Equal(json, capture.Bytes);
        Assert.Equal(json.Length, capture.Content!.Headers.ContentLength);
        Assert.Equal("application/json; charset=utf-8", capture.Content.Headers.ContentType?.ToString());
        Assert.Equal("de", Assert.Single(capture.Content.Headers.ContentLanguage));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(OneSendHandler.MaxBody - 1)]
    [InlineData(OneSendHandler.MaxBody)]
    public async Task BodyUpToTheWriteBuffer_Swapped_EveryByteSent(int size)
    {
        // Offset into a larger (pooled-size) array, as ReadBodyStage's rented buffer: only the segment goes out.
        var buffer = new byte[size + 100];
        Random.Shared.NextBytes(buffer);
        var body = buffer.AsSpan(50, size).ToArray();
        using var request = Request(body);
        OneSendHandler.Offer(request, new Body(buffer, 50, size));

        var capture = await SendAsync(request);

        Assert.IsType<ByteArrayContent>(capture.Content);
        Assert.Equal(body, capture.Bytes);
        Assert.Equal(size, capture.Content!.Headers.ContentLength);
    }

    [Fact]
    public async Task BodyLargerThanTheWriteBuffer_StreamsFlushed_NotCopiedIntoOneSend()
    {
        var big = new byte[OneSendHandler.MaxBody + 1];
        using var request = Request(big);
        var streamed = request.Content;
        OneSendHandler.Offer(request, new Body(big, 0, big.Length));

        var capture = await SendAsync(request);

        // Not copied into one send: it streams as YARP made it, flushed piece by piece (FlushingContent).
        Assert.IsNotType<ByteArrayContent>(capture.Content);
        Assert.IsType<FlushingContent>(capture.Content);
        Assert.Equal(big, capture.Bytes);
    }

    [Fact]
    public async Task NotOffered_StreamsFlushed_SameBytesAndLength()
    {
        using var request = Request("{}"u8.ToArray());

        var capture = await SendAsync(request);

        Assert.IsType<FlushingContent>(capture.Content);
        Assert.Equal("{}"u8.ToArray(), capture.Bytes);
        Assert.Equal(2, capture.Content.Headers.ContentLength);
    }

    [Fact]
    public async Task EmptyBody_NotSwapped()
    {
        using var request = Request([]);
        var streamed = request.Content;
        OneSendHandler.Offer(request, new Body([], 0, 0));

        var capture = await SendAsync(request);

        Assert.Same(streamed, capture.Content);
    }

    [Fact]
    public async Task OfferForAnotherMessage_NotTaken_NeitherMessageSwapped()
    {
        var body = """{"model":"m"}"""u8.ToArray();
        using var offered = Request(body);
        using var other = Request(body);
        OneSendHandler.Offer(offered, new Body(body, 0, body.Length));

        var first = await SendAsync(other);
        var second = await SendAsync(offered);

        // The other message never gets the offered bytes, and a send that found the slot taken by another message
        // cleared it: the offered message then streams as YARP made it. Both carry their own bytes.
        Assert.IsType<FlushingContent>(first.Content);
        Assert.IsType<FlushingContent>(second.Content);
        Assert.Equal(body, first.Bytes);
        Assert.Equal(body, second.Bytes);
    }

    [Fact]
    public async Task Offer_AllocatesNothing_OnceTheThreadHasItsSlot()
    {
        // The offer used to live in HttpRequestMessage.Options: a dictionary per request. The thread-static slot costs
        // nothing per request once the thread has it. Measured on a dedicated thread, so nothing else allocates there.
        var body = """{"model":"m"}"""u8.ToArray();
        var offered = new Body(body, 0, body.Length);
        using var first = Request(body);
        using var second = Request(body);
        long allocated = -1;
        var thread = new Thread(() =>
        {
            using var invoker = new HttpMessageInvoker(new OneSendHandler(new Capture()));
            OneSendHandler.Offer(first, offered);
            _ = invoker.SendAsync(first, CancellationToken.None).GetAwaiter().GetResult(); // the thread gets its slot
            var before = GC.GetAllocatedBytesForCurrentThread();
            OneSendHandler.Offer(second, offered);
            allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        });
        thread.Start();
        thread.Join();
        Assert.Equal(0, allocated);
        // And the offer it made is the one the next send of that message on that thread would take: not this thread's.
        var capture = await SendAsync(second);
        Assert.IsType<FlushingContent>(capture.Content);
    }

    [Fact]
    public async Task OfferMadeOnAnotherThread_NotTaken()
    {
        var body = """{"model":"m"}"""u8.ToArray();
        using var request = Request(body);
        var thread = new Thread(() => OneSendHandler.Offer(request, new Body(body, 0, body.Length)));
        thread.Start();
        thread.Join();

        var capture = await SendAsync(request);

        Assert.IsType<FlushingContent>(capture.Content);
        Assert.Equal(body, capture.Bytes);
    }

    [Fact]
    public async Task ThroughThePipeline_EverySmallBufferedBodyGoesInOnePiece_ALargeOneStreams()
    {
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u"));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config($"- name: u\n  url: \"{upstream.Url}\"", "- name: u"));
        var handler = proxy.Host.Runtime.Groups["g"].OneSend;
        var small = """{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}""";
        var large = "{\"model\":\"gpt-4o-mini\",\"pad\":\"" + new string('x', OneSendHandler.MaxBody) + "\"}";

        for (var i = 0; i < 5; i++)
        {
            using var response = await proxy.Client.PostAsync("/v1/chat/completions", new StringContent(small, Encoding.UTF8, "application/json"));
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }
        Assert.Equal(5, handler.Swapped);
        using (var response = await proxy.Client.PostAsync("/v1/chat/completions", new StringContent(large, Encoding.UTF8, "application/json")))
        {
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }
        Assert.Equal(5, handler.Swapped);
        Assert.Equal([.. Enumerable.Repeat(small, 5), large], upstream.Received.Select(r => Encoding.UTF8.GetString(r.Body)));
    }
}
