using System.Buffers.Text;

namespace LLMProxy.Forwarding;

/// <summary>
/// Reads LLM token usage out of a response body as it streams past, without parsing the JSON:
/// OpenAI (<c>prompt_tokens</c>/<c>completion_tokens</c>) and Anthropic (<c>input_tokens</c>/<c>output_tokens</c>),
/// in JSON answers and SSE events. Values are kept as maxima, so a report repeated or growing over a
/// stream (Anthropic's cumulative <c>output_tokens</c>) and the overlap scan at chunk borders never double count.
/// </summary>
internal sealed class UsageScanner
{
    private static readonly byte[][] PromptKeys = ["\"prompt_tokens\":"u8.ToArray(), "\"input_tokens\":"u8.ToArray()];
    private static readonly byte[][] CompletionKeys = ["\"completion_tokens\":"u8.ToArray(), "\"output_tokens\":"u8.ToArray()];
    private const int Carry = 48;

    private readonly byte[] _border = new byte[Carry * 2];
    private int _carried;

    public long PromptTokens { get; private set; }
    public long CompletionTokens { get; private set; }
    public bool Found => PromptTokens > 0 || CompletionTokens > 0;

    public void Scan(ReadOnlySpan<byte> chunk)
    {
        var head = Math.Min(chunk.Length, Carry);
        if (_carried > 0)
        {
            // A key or number split across writes is whole in the last bytes seen plus this chunk's head.
            chunk[..head].CopyTo(_border.AsSpan(_carried));
            ScanSpan(_border.AsSpan(0, _carried + head));
        }
        ScanSpan(chunk);
        if (chunk.Length >= Carry)
        {
            chunk[^Carry..].CopyTo(_border);
            _carried = Carry;
        }
        else
        {
            // Short chunk: the window is the last Carry bytes of (previous window + chunk), already joined above.
            var joined = _carried + head;
            if (_carried == 0)
            {
                chunk.CopyTo(_border);
            }
            var keep = Math.Min(joined, Carry);
            _border.AsSpan(joined - keep, keep).CopyTo(_border);
            _carried = keep;
        }
    }

    private void ScanSpan(ReadOnlySpan<byte> data)
    {
        PromptTokens = Math.Max(PromptTokens, Find(data, PromptKeys));
        CompletionTokens = Math.Max(CompletionTokens, Find(data, CompletionKeys));
    }

    private static long Find(ReadOnlySpan<byte> data, byte[][] keys)
    {
        long best = 0;
        foreach (var key in keys)
        {
            var rest = data;
            int at;
            while ((at = rest.IndexOf(key)) >= 0)
            {
                rest = rest[(at + key.Length)..];
                var number = rest.TrimStart((byte)' ');
                if (Utf8Parser.TryParse(number, out long value, out var consumed) && consumed < number.Length && value > best)
                {
                    // consumed < length: the number is complete (followed by a delimiter), not cut by the chunk end.
                    best = value;
                }
            }
        }
        return best;
    }
}
