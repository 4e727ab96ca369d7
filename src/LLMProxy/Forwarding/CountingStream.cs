using Microsoft.AspNetCore.Http;

namespace LLMProxy.Forwarding;

/// <summary>Pass-through response body stream that counts bytes for the access log and size metric, optionally reads
/// token usage, and cuts a client that stops reading: a write or flush still pending after <c>timeout.write</c> aborts
/// the connection, which ends the upstream request and frees its slot (see <see cref="ClientStreams"/>).</summary>
internal sealed class CountingStream(Stream inner, HttpContext? context = null, ClientStreams? owner = null, string requestId = "")
    : Stream, IStallable
{
    private int _stalled;

    public long Written { get; private set; }

    /// <summary>Set when the response is JSON or SSE from an LLM API: token usage is read as it passes.</summary>
    public UsageScanner? Usage { get; set; }

    public override bool CanRead => false;
    public override bool CanSeek => false;
    public override bool CanWrite => true;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

    public override void Flush() => inner.Flush();
    public override Task FlushAsync(CancellationToken cancellationToken) => Watch(inner.FlushAsync(cancellationToken));
    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();

    public override void Write(byte[] buffer, int offset, int count)
    {
        Written += count;
        Usage?.Scan(buffer.AsSpan(offset, count));
        inner.Write(buffer, offset, count);
    }

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken)
    {
        Written += count;
        Usage?.Scan(buffer.AsSpan(offset, count));
        return Watch(inner.WriteAsync(buffer, offset, count, cancellationToken));
    }

    public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        Written += buffer.Length;
        Usage?.Scan(buffer.Span);
        var write = inner.WriteAsync(buffer, cancellationToken);
        return write.IsCompleted || owner is null ? write : WatchAsync(write);
    }

    // A write that completes at once (the usual case: Kestrel's buffer has room) costs no timer.
    private Task Watch(Task operation) => operation.IsCompleted || owner is null ? operation : WatchAsync(operation);

    private async Task WatchAsync(Task operation)
    {
        var pending = new PendingOperation(this, owner!.Time, owner.WriteTimeout);
        try
        {
            await operation.ConfigureAwait(false);
        }
        finally
        {
            pending.Complete();
        }
    }

    private async ValueTask WatchAsync(ValueTask operation)
    {
        var pending = new PendingOperation(this, owner!.Time, owner.WriteTimeout);
        try
        {
            await operation.ConfigureAwait(false);
        }
        finally
        {
            pending.Complete();
        }
    }

    void IStallable.OnStalled()
    {
        if (Interlocked.Exchange(ref _stalled, 1) == 0)
        {
            owner!.WriteStalled(requestId);
            context!.Abort();
        }
    }
}
