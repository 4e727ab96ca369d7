namespace LLMProxy.Runtime;

/// <summary>The bytes an attempt sends as its request body, when the proxy holds them in memory.</summary>
internal interface IBufferedBody
{
    /// <summary>This attempt's body; empty when it is not buffered (it streams from the client).</summary>
    ArraySegment<byte> AttemptBody { get; }
}

/// <summary>
/// Sends a small buffered request body in the same write as the request head. YARP hands SocketsHttpHandler a content
/// that streams the client's body and flushes the head first — two sends per upstream request, where nginx does one.
/// When the body is already in memory (<c>ReadBodyStage</c> buffered it for replay) and fits the connection's write
/// buffer, this handler — between YARP, which checks its content before sending, and SocketsHttpHandler — swaps in a
/// <see cref="ByteArrayContent"/> over the same bytes: SocketsHttpHandler copies head and body into its 4 KiB write
/// buffer and sends them at once. Larger bodies keep YARP's content: they need two sends either way, and a body
/// copied into the write buffer is never referenced by a pending socket write after the request returns its pooled
/// array. Off with <c>LLMPROXY_ONE_SEND=0</c> (for A/B runs, bench/README.md).
/// </summary>
internal sealed class OneSendHandler(HttpMessageHandler inner) : DelegatingHandler(inner)
{
    public const string Variable = "LLMPROXY_ONE_SEND";

    /// <summary>
    /// SocketsHttpHandler's HTTP/1.1 write buffer. A body up to this size is handed over as one array; it goes out in the
    /// same send as the head only when head and body together fit the buffer (otherwise two sends, as before).
    /// </summary>
    public const int MaxBody = 4096;

    public static readonly bool Enabled = Environment.GetEnvironmentVariable(Variable) != "0";

    /// <summary>
    /// The offer for the message this thread is about to send. YARP calls the handler on the thread that ran the transform,
    /// with nothing awaited in between when the transform completes at once (it always does here), so the offer travels
    /// in a thread-static slot rather than in the message's <c>Options</c> (a dictionary per request). It is taken only
    /// by the very message it was made for: a send that continued elsewhere finds no offer and streams the body as
    /// before — two sends, never another request's bytes.
    /// </summary>
    [ThreadStatic]
    private static Offered? t_offered;

    private sealed class Offered
    {
        public HttpRequestMessage? Message;
        public IBufferedBody? Body;
    }

    /// <summary>Marks <paramref name="message"/> for the swap when its body is buffered and small enough.</summary>
    public static void Offer(HttpRequestMessage message, IBufferedBody body)
    {
        if (Enabled && body.AttemptBody is { Count: > 0 and <= MaxBody })
        {
            var offered = t_offered ??= new Offered();
            offered.Message = message;
            offered.Body = body;
        }
    }

    /// <summary>The offer made on this thread for <paramref name="message"/>, taken (the slot is cleared either way).</summary>
    private static IBufferedBody? Take(HttpRequestMessage message)
    {
        if (t_offered is not { Message: { } offeredFor } offered)
        {
            return null;
        }
        var body = ReferenceEquals(offeredFor, message) ? offered.Body : null;
        offered.Message = null;
        offered.Body = null;
        return body;
    }

    private long _swapped;

    /// <summary>Requests this handler sent with their buffered body in one piece (for tests).</summary>
    internal long Swapped => Interlocked.Read(ref _swapped);

    protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        if (request.Content is { } streamed && Take(request) is { } body && body.AttemptBody is { Count: > 0 } bytes)
        {
            Interlocked.Increment(ref _swapped);
            var content = new ByteArrayContent(bytes.Array!, bytes.Offset, bytes.Count);
            foreach (var header in streamed.Headers.NonValidated)
            {
                // Content-Length follows the bytes (it is the same number: the attempt stage set it from them).
                if (!string.Equals(header.Key, "Content-Length", StringComparison.OrdinalIgnoreCase))
                {
                    foreach (var value in header.Value)
                    {
                        content.Headers.TryAddWithoutValidation(header.Key, value);
                    }
                }
            }
            // YARP keeps its own reference to the content it made (never started: it waits on it only once started).
            request.Content = content;
        }
        else if (request.Content is { Headers.ContentLength: null or > 0 } fromClient)
        {
            // (Not YARP's empty content that only carries headers of a request without a body: length 0.)
            // Any other body (streaming from the client, or buffered but beyond MaxBody): every piece goes on as it is
            // written (see FlushingContent); for a buffered body a flush after a write larger than the buffer costs nothing.
            request.Content = new FlushingContent(fromClient);
        }
        return base.SendAsync(request, cancellationToken);
    }
}

/// <summary>
/// A request body not sent in one write with the head, flushed upstream after every piece YARP copies. YARP copies a request body without
/// flushing (it flushes only gRPC), and SocketsHttpHandler keeps up to its 4 KiB write buffer of it until more comes:
/// a client that uploads in bursts — or sends part of a body and waits for the server — would have the tail of each
/// burst held back until the next one. The inner content is YARP's own and is the one that runs (YARP's bookkeeping of
/// the body copy, which classifies client and upstream failures, sees its content started and finished as before).
/// </summary>
internal sealed class FlushingContent(HttpContent inner) : Forwarding.WrappedContent(inner)
{
    protected override Task SerializeToStreamAsync(Stream stream, System.Net.TransportContext? context) =>
        Inner.CopyToAsync(new FlushingStream(stream), context);

    protected override Task SerializeToStreamAsync(Stream stream, System.Net.TransportContext? context, CancellationToken cancellationToken) =>
        Inner.CopyToAsync(new FlushingStream(stream), context, cancellationToken);

    /// <summary>Writes through to the connection's stream and flushes after each write.</summary>
    private sealed class FlushingStream(Stream inner) : Stream
    {
        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            await inner.WriteAsync(buffer, cancellationToken).ConfigureAwait(false);
            await inner.FlushAsync(cancellationToken).ConfigureAwait(false);
        }

        public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        public override void Write(byte[] buffer, int offset, int count)
        {
            inner.Write(buffer, offset, count);
            inner.Flush();
        }

        public override Task FlushAsync(CancellationToken cancellationToken) => inner.FlushAsync(cancellationToken);
        public override void Flush() => inner.Flush();
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
    }
}
