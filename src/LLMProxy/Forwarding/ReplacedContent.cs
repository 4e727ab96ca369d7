using System.Net;

namespace LLMProxy.Forwarding;

/// <summary>
/// An upstream response's content replaced by a stream of the proxy's (in the transformer, before YARP reads the
/// body): keeps the upstream's content headers, owns the upstream content, and announces no length of its own.
/// Subclasses only say which stream the body is read from.
/// </summary>
internal abstract class ReplacedContent(HttpContent inner) : WrappedContent(inner)
{
    /// <summary>The body as the client is to receive it.</summary>
    protected abstract Task<Stream> OpenAsync(HttpContent inner, CancellationToken cancellationToken);

    protected sealed override Task<Stream> CreateContentReadStreamAsync(CancellationToken cancellationToken) => OpenAsync(Inner, cancellationToken);

    protected sealed override Task<Stream> CreateContentReadStreamAsync() => OpenAsync(Inner, CancellationToken.None);

    protected sealed override async Task SerializeToStreamAsync(Stream stream, TransportContext? context)
    {
        await using var body = await OpenAsync(Inner, CancellationToken.None).ConfigureAwait(false);
        await body.CopyToAsync(stream).ConfigureAwait(false);
    }

    /// <summary>The forward-only, read-only stream a replacement body is: a subclass implements the one
    /// <see cref="ReadAsync(Memory{byte}, CancellationToken)"/> (and disposes what it wraps); the rest is here.</summary>
    internal abstract class ReadOnlyStream : Stream
    {
        public abstract override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default);

        public sealed override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        public sealed override int Read(byte[] buffer, int offset, int count) => ReadAsync(buffer.AsMemory(offset, count)).AsTask().GetAwaiter().GetResult();

        public sealed override bool CanRead => true;
        public sealed override bool CanSeek => false;
        public sealed override bool CanWrite => false;
        public sealed override long Length => throw new NotSupportedException();
        public sealed override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public sealed override void Flush() { }
        public sealed override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public sealed override void SetLength(long value) => throw new NotSupportedException();
        public sealed override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }
}
