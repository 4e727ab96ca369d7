using System.Buffers;

namespace LLMProxy.Forwarding;

/// <summary>
/// Takes the usage-only chunk (<c>"choices":[]</c> with a <c>usage</c> object) out of an OpenAI SSE stream whose usage
/// the proxy asked for on the client's behalf (<see cref="IncludeUsage"/>). Every other event goes to the client as
/// soon as its terminating blank line has passed: only the bytes of an event not yet complete are held, and an event
/// longer than <see cref="MaxHeld"/> (never the usage chunk, which is a few hundred bytes) is passed on as it comes.
/// The usage scanner sees the upstream's bytes before this filter, so the dropped chunk is still counted.
/// </summary>
internal sealed class UsageChunkFilter
{
    /// <summary>Longest event held back to be judged whole.</summary>
    public const int MaxHeld = 16 * 1024;

    // Both grow on first use (from 256 bytes): an event cut across reads is rare, and what one read passes on is one or a
    // few events — not 5 KiB per stream up front, which 1,000 open streams would hold for nothing.
    private readonly ArrayBufferWriter<byte> _event = new();
    private readonly ArrayBufferWriter<byte> _out = new();
    private bool _lineHasContent;
    private bool _passing;
    // The last read ended on a CR: a LF first in the next read completes that CRLF, one line end and not two.
    private bool _pendingCr;
    // ... and that CR ended an event, whose pass-or-drop verdict the LF follows.
    private bool _crEndedEvent;
    private bool _lastDropped;

    /// <summary>Whether a usage-only chunk was taken out.</summary>
    public bool Dropped { get; private set; }

    /// <summary>What to send the client for <paramref name="input"/>; valid until the next call.</summary>
    /// <remarks>Lines end with CRLF, LF or CR, as the SSE grammar says; an event ends with a blank line. One search for
    /// either byte finds the line ends, so an LF stream costs what it did when only LF was looked for. A CR that ends a
    /// read ends its line at once (an event ended by <c>\r\r</c> goes on without waiting for the next read); a LF that
    /// opens the next read is then the rest of that CRLF, sent or dropped with the event the CR ended.</remarks>
    public ReadOnlyMemory<byte> Filter(ReadOnlySpan<byte> input)
    {
        _out.ResetWrittenCount();
        int start = 0, pos = 0, end;
        if (_pendingCr && !input.IsEmpty)
        {
            _pendingCr = false;
            if (input[0] == (byte)'\n')
            {
                pos = 1;
                if (_crEndedEvent)
                {
                    if (!_lastDropped)
                    {
                        _out.Write(input[..1]);
                    }
                    start = 1;
                }
            }
        }
        while ((end = input[pos..].IndexOfAny((byte)'\n', (byte)'\r')) >= 0)
        {
            end += pos;
            var blank = !_lineHasContent && end == pos;
            _lineHasContent = false;
            var cr = input[end] == (byte)'\r';
            pos = end + 1;
            if (cr)
            {
                if (pos < input.Length)
                {
                    if (input[pos] == (byte)'\n')
                    {
                        pos++;
                    }
                }
                else
                {
                    _pendingCr = true;
                }
            }
            if (blank)
            {
                _lastDropped = EndEvent(input[start..pos]);
                start = pos;
            }
            _crEndedEvent = blank;
        }
        _lineHasContent |= pos < input.Length;
        Partial(input[start..]);
        return _out.WrittenMemory;
    }

    /// <summary>Whatever is still held when the upstream's body ended (an event without its blank line).</summary>
    public ReadOnlyMemory<byte> Flush()
    {
        _out.ResetWrittenCount();
        _out.Write(_event.WrittenSpan);
        _event.ResetWrittenCount();
        return _out.WrittenMemory;
    }

    /// <summary>Ends the event whose last bytes are <paramref name="tail"/>: true when it was the usage-only chunk and dropped.</summary>
    private bool EndEvent(ReadOnlySpan<byte> tail)
    {
        if (_passing)
        {
            _out.Write(tail);
            _passing = false;
            return false;
        }
        ReadOnlySpan<byte> whole = tail;
        if (_event.WrittenCount > 0)
        {
            _event.Write(tail);
            whole = _event.WrittenSpan;
        }
        var drop = whole.Length <= MaxHeld && IsUsageOnly(whole);
        if (drop)
        {
            Dropped = true;
        }
        else
        {
            _out.Write(whole);
        }
        _event.ResetWrittenCount();
        return drop;
    }

    private void Partial(ReadOnlySpan<byte> part)
    {
        if (part.IsEmpty)
        {
            return;
        }
        if (_passing)
        {
            _out.Write(part);
        }
        else if (_event.WrittenCount + part.Length > MaxHeld)
        {
            _out.Write(_event.WrittenSpan);
            _out.Write(part);
            _event.ResetWrittenCount();
            _passing = true;
        }
        else
        {
            _event.Write(part);
        }
    }

    /// <summary>A <c>data:</c> event whose JSON has an empty <c>choices</c> array and a <c>usage</c> object.</summary>
    internal static bool IsUsageOnly(ReadOnlySpan<byte> evt) =>
        evt.StartsWith("data:"u8) && Follows(evt, "\"choices\":"u8, "[]"u8) && Follows(evt, "\"usage\":"u8, "{"u8);

    private static bool Follows(ReadOnlySpan<byte> evt, ReadOnlySpan<byte> key, ReadOnlySpan<byte> value)
    {
        var at = evt.IndexOf(key);
        if (at < 0)
        {
            return false;
        }
        var rest = evt[(at + key.Length)..].TrimStart(" \t"u8);
        return value.Length == 2
            ? rest.Length > 0 && rest[0] == value[0] && rest[1..].TrimStart(" \t\r\n"u8).StartsWith(value[1..])
            : rest.StartsWith(value);
    }
}
