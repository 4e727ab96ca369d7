using System.Buffers.Text;

namespace LLMProxy.Forwarding;

/// <summary>Token usage of one answer (SPEC §13.2). <see cref="Prompt"/> counts every input token the way OpenAI's
/// <c>prompt_tokens</c> does — cached ones included — so for Anthropic it is <c>input_tokens</c> plus
/// <c>cache_read_input_tokens</c> plus <c>cache_creation_input_tokens</c>. <see cref="Cached"/> and
/// <see cref="Reasoning"/> are parts of <see cref="Prompt"/> and <see cref="Completion"/>, not additions, so a
/// budget settles with <c>Prompt + Completion</c>.</summary>
internal readonly record struct TokenUsage(long Prompt, long Completion, long Cached, long Reasoning)
{
    /// <summary>Whether the answer reported a prompt or completion count at all (a zero one included).</summary>
    public bool Found { get; init; }

    /// <summary>What a token budget settles with.</summary>
    public long Total => Prompt + Completion;
}

/// <summary>
/// Reads LLM token usage out of a response body as it streams past, without parsing the JSON and without holding any
/// of it back: OpenAI chat/completions/embeddings (<c>prompt_tokens</c>, <c>completion_tokens</c>,
/// <c>prompt_tokens_details.cached_tokens</c>, <c>completion_tokens_details.reasoning_tokens</c>), OpenAI responses
/// (<c>input_tokens</c>, <c>output_tokens</c> and their <c>_details</c>) and Anthropic messages (<c>input_tokens</c>,
/// <c>output_tokens</c>, <c>cache_read_input_tokens</c>, <c>cache_creation_input_tokens</c>), in JSON answers and SSE
/// events. Hand-written because no JSON reader reads a document cut at arbitrary write borders in bounded memory.
/// </summary>
/// <remarks>
/// Every usage key ends in <c>_tokens"</c>: one vectorised search per write finds them, and the bytes before and after
/// name the key and give its number. Values are kept as maxima, so a report repeated or growing over a stream
/// (Anthropic's cumulative <c>message_delta</c> usage, the empty <c>usage</c> of OpenAI's earlier events) and the
/// re-scan of the few bytes carried over a write border never double count. A key inside a JSON string cannot match:
/// its quotes are escaped there. Numbers that are not plain non-negative integers, or exceed
/// <see cref="MaxCount"/>, are ignored, so a hostile upstream cannot overflow the sums or the metrics.
/// <para>In a JSON answer (not a stream) only the keys after its last <c>"usage":</c> count: the model writes real JSON
/// objects there too — an Anthropic <c>tool_use</c> block's <c>input</c> —, and a client that steered it into writing
/// <c>{"prompt_tokens":900000000000}</c> made the proxy settle the key's token budget with that. Providers put the
/// answer's own <c>usage</c> after its content (OpenAI chat and responses, Anthropic messages). A stream's events each
/// carry their own usage (Anthropic's input in <c>message_start</c>, output in <c>message_delta</c>), and what the model
/// writes in a stream arrives inside strings, so streams keep every key.</para>
/// </remarks>
internal sealed class UsageScanner(bool lastUsageWins = false)
{
    /// <summary>Largest count believed (10^12): far above any real answer, far below overflow when summed.</summary>
    public const long MaxCount = 1_000_000_000_000;

    // Longest key ("cache_creation_input_tokens": 29 bytes with quotes and colon) + spaces + a 13-digit number + delimiter.
    private const int Carry = 64;

    private static ReadOnlySpan<byte> KeyTail => "_tokens\""u8;

    private static ReadOnlySpan<byte> UsageKey => "\"usage\""u8;

    private enum Field { Prompt, Completion, Cached, Reasoning, CacheRead, CacheCreation, Count }

    // Inline in the scanner (one object per answer instead of three).
    private Maxima _max;
    private Border _border;

    [System.Runtime.CompilerServices.InlineArray((int)Field.Count)]
    private struct Maxima
    {
        private long _element;
    }

    [System.Runtime.CompilerServices.InlineArray(Carry * 2)]
    private struct Border
    {
        private byte _element;
    }
    private int _carried;
    private bool _found;

    /// <summary>What was read so far; complete once the body has passed.</summary>
    public TokenUsage Usage => new(
        Math.Min(_max[(int)Field.Prompt] + _max[(int)Field.CacheRead] + _max[(int)Field.CacheCreation], 3 * MaxCount),
        _max[(int)Field.Completion],
        Math.Max(_max[(int)Field.Cached], _max[(int)Field.CacheRead]),
        _max[(int)Field.Reasoning]) { Found = _found };

    public void Scan(ReadOnlySpan<byte> chunk)
    {
        var head = Math.Min(chunk.Length, Carry);
        Span<byte> border = _border;
        if (_carried > 0)
        {
            // A key or number split across writes is whole in the last bytes seen plus this chunk's head.
            chunk[..head].CopyTo(border.Slice(_carried));
            ScanSpan(border.Slice(0, _carried + head));
        }
        ScanSpan(chunk);
        if (chunk.Length >= Carry)
        {
            chunk[^Carry..].CopyTo(border);
            _carried = Carry;
        }
        else
        {
            // Short chunk: the window is the last Carry bytes of (previous window + chunk), already joined above.
            var joined = _carried + head;
            if (_carried == 0)
            {
                chunk.CopyTo(border);
            }
            var keep = Math.Min(joined, Carry);
            border.Slice(joined - keep, keep).CopyTo(border);
            _carried = keep;
        }
    }

    private void ScanSpan(ReadOnlySpan<byte> data)
    {
        var offset = 0;
        var usageAt = lastUsageWins ? NextUsageKey(data, 0) : -1;
        int at;
        while ((at = data[offset..].IndexOf(KeyTail)) >= 0)
        {
            var tail = offset + at;
            offset = tail + KeyTail.Length;
            // In position order: a usage object opening before this key starts the count afresh.
            while (usageAt >= 0 && usageAt < tail)
            {
                _max = default;
                _found = false;
                usageAt = NextUsageKey(data, usageAt + UsageKey.Length);
            }
            var field = Name(data[..tail]);
            if (field == Field.Count)
            {
                continue;
            }
            var rest = data[offset..].TrimStart(" \t\r\n"u8);
            if (rest.IsEmpty || rest[0] != (byte)':')
            {
                continue;
            }
            var number = rest[1..].TrimStart(" \t\r\n"u8);
            // consumed < length: the number is complete (followed by a delimiter), not cut by the chunk end.
            if (number.Length > 0 && number[0] is >= (byte)'0' and <= (byte)'9'
                && Utf8Parser.TryParse(number, out long value, out var consumed) && consumed < number.Length
                && number[consumed] is not ((byte)'.' or (byte)'e' or (byte)'E') && value <= MaxCount)
            {
                ref var slot = ref _max[(int)field];
                slot = Math.Max(slot, value);
                _found |= field is Field.Prompt or Field.Completion;
            }
        }
        if (usageAt >= 0)
        {
            // A usage object after the last key of this span: what came before it does not count (its keys follow).
            _max = default;
            _found = false;
        }
    }

    /// <summary>Where the next <c>"usage"</c> key opening an object (<c>"usage": {</c>) starts at or after
    /// <paramref name="from"/>; -1 when none. Only an object: the Responses API echoes the request's <c>metadata</c>
    /// after its usage, and a client's <c>"usage":"x"</c> there must not wipe it. A key cut by the span's end is found
    /// whole in the next span's border.</summary>
    private static int NextUsageKey(ReadOnlySpan<byte> data, int from)
    {
        while (from < data.Length)
        {
            var at = data[from..].IndexOf(UsageKey);
            if (at < 0)
            {
                return -1;
            }
            var start = from + at;
            var rest = data[(start + UsageKey.Length)..].TrimStart(" \t\r\n"u8);
            if (!rest.IsEmpty && rest[0] == (byte)':' && rest[1..].TrimStart(" \t\r\n"u8) is [(byte)'{', ..])
            {
                return start;
            }
            from = start + UsageKey.Length;
        }
        return -1;
    }

    /// <summary>Which usage key ends just before <c>_tokens"</c>; <see cref="Field.Count"/> for any other.</summary>
    private static Field Name(ReadOnlySpan<byte> before) =>
        before.EndsWith("\"prompt"u8) || before.EndsWith("\"input"u8) ? Field.Prompt
        : before.EndsWith("\"completion"u8) || before.EndsWith("\"output"u8) ? Field.Completion
        : before.EndsWith("\"cached"u8) ? Field.Cached
        : before.EndsWith("\"reasoning"u8) ? Field.Reasoning
        : before.EndsWith("\"cache_read_input"u8) ? Field.CacheRead
        : before.EndsWith("\"cache_creation_input"u8) ? Field.CacheCreation
        : Field.Count;
}
