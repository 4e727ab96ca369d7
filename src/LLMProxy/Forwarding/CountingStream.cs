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

    /// <summary>The request's body as read from the client (null when the request can have none).</summary>
    public RequestBodyGuard? RequestBody { get; init; }

    /// <summary>Set when the response is JSON or SSE from an LLM API: token usage is read as it passes.</summary>
    public UsageScanner? Usage { get; set; }

    /// <summary>Set when the proxy asked for usage the client did not (<see cref="IncludeUsage"/>): the usage-only SSE
    /// chunk is read by <see cref="Usage"/> and then taken out.</summary>
    public UsageChunkFilter? UsageFilter { get; set; }

    /// <summary>Sends what <see cref="UsageFilter"/> still holds when the upstream's body ended cleanly.</summary>
    public ValueTask FlushFilterAsync(CancellationToken cancellationToken)
    {
        if (UsageFilter is not { } filter)
        {
            return ValueTask.CompletedTask;
        }
        var rest = filter.Flush();
        return rest.IsEmpty ? ValueTask.CompletedTask : WriteOutAsync(rest, cancellationToken);
    }

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
        Usage?.Scan(buffer.AsSpan(offset, count));
        if (UsageFilter is { } filter)
        {
            var kept = filter.Filter(buffer.AsSpan(offset, count));
            Written += kept.Length;
            inner.Write(kept.Span);
            return;
        }
        Written += count;
        inner.Write(buffer, offset, count);
    }

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        Usage?.Scan(buffer.Span);
        if (UsageFilter is { } filter)
        {
            buffer = filter.Filter(buffer.Span);
            if (buffer.IsEmpty)
            {
                return ValueTask.CompletedTask;
            }
        }
        return WriteOutAsync(buffer, cancellationToken);
    }

    private ValueTask WriteOutAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken)
    {
        Written += buffer.Length;
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
