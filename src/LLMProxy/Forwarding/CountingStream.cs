namespace LLMProxy.Forwarding;

/// <summary>Pass-through response body stream that counts bytes for the access log and size metric,
/// and optionally reads token usage.</summary>
internal sealed class CountingStream(Stream inner) : Stream
{
    public long Written { get; private set; }

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
        Written += rest.Length;
        return rest.IsEmpty ? ValueTask.CompletedTask : inner.WriteAsync(rest, cancellationToken);
    }

    public override bool CanRead => false;
    public override bool CanSeek => false;
    public override bool CanWrite => true;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

    public override void Flush() => inner.Flush();
    public override Task FlushAsync(CancellationToken cancellationToken) => inner.FlushAsync(cancellationToken);
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
            var kept = filter.Filter(buffer.Span);
            Written += kept.Length;
            return kept.IsEmpty ? ValueTask.CompletedTask : inner.WriteAsync(kept, cancellationToken);
        }
        Written += buffer.Length;
        return inner.WriteAsync(buffer, cancellationToken);
    }
}
