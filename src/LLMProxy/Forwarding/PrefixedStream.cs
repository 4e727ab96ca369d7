namespace LLMProxy.Forwarding;

/// <summary>A body whose first <c>length</c> bytes were read already: those, then the rest from where they came (none
/// when it had ended). Used for a request body read up to the replay limit and for an upstream's error body read to
/// classify it; <paramref name="ownsRest"/> says whether disposing this disposes the rest (an upstream's response
/// stream: yes; Kestrel's request body: no).</summary>
internal sealed class PrefixedStream(byte[] prefix, int length, Stream? rest, bool ownsRest = false) : ReplacedContent.ReadOnlyStream
{
    private int _position;

    /// <summary>Where the body goes on after the prefix (for a request body: the client's body guard).</summary>
    public Stream? Rest => rest;

    public override ValueTask<int> ReadAsync(Memory<byte> destination, CancellationToken cancellationToken = default)
    {
        if (_position < length)
        {
            var n = Math.Min(destination.Length, length - _position);
            prefix.AsSpan(_position, n).CopyTo(destination.Span);
            _position += n;
            return new ValueTask<int>(n);
        }
        return rest is null ? new ValueTask<int>(0) : rest.ReadAsync(destination, cancellationToken);
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing && ownsRest)
        {
            rest?.Dispose();
        }
        base.Dispose(disposing);
    }
}
