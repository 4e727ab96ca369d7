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

    private static readonly HttpRequestOptionsKey<IBufferedBody> BodyKey = new("LLMProxy.BufferedBody");

    /// <summary>Marks <paramref name="message"/> for the swap when its body is buffered and small enough.</summary>
    public static void Offer(HttpRequestMessage message, IBufferedBody body)
    {
        if (Enabled && body.AttemptBody is { Count: > 0 and <= MaxBody })
        {
            message.Options.Set(BodyKey, body);
        }
    }

    protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        if (request.Content is { } streamed && request.Options.TryGetValue(BodyKey, out var body) && body.AttemptBody is { Count: > 0 } bytes)
        {
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
        return base.SendAsync(request, cancellationToken);
    }
}
