using System.Collections;
using System.Globalization;

namespace LLMProxy.Observability;

/// <summary>
/// The state of the access line (<see cref="Log.Access"/>), written by hand where the other lines use
/// <c>[LoggerMessage]</c>: every provider sees the same message, event and named values as the generated code would
/// give, and the batching console logger can queue it as it is and write its text straight into its output, instead of
/// a message string per request (<see cref="TryFormat"/>).
/// </summary>
internal readonly struct AccessLine(string method, string path, int status, string forward, string upstream, int attempts,
    double durationMs, long bytes, string outcome, string requestId, string group, string model, string client)
    : IReadOnlyList<KeyValuePair<string, object?>>
{
    public const string Template = "{Method} {Path} {Status} forward={Forward} upstream={Upstream} attempts={Attempts} duration_ms={DurationMs:F1} bytes={Bytes} outcome={Outcome} group={Group} model={Model} client={Client} request_id={RequestId}";

    public static readonly Func<AccessLine, Exception?, string> Format = static (state, _) => state.ToString();

    /// <summary>The text <see cref="TryFormat"/> writes (one template for both: the console and every other provider see
    /// the same line).</summary>
    public override string ToString()
    {
        // The parts are bounded (the path by Kestrel's request-line limit, the model by 64 characters), so this grows a
        // few times at most.
        for (var size = 512; ; size *= 2)
        {
            var rented = System.Buffers.ArrayPool<char>.Shared.Rent(size);
            try
            {
                if (TryFormat(rented, out var written))
                {
                    return new string(rented, 0, written);
                }
            }
            finally
            {
                System.Buffers.ArrayPool<char>.Shared.Return(rented);
            }
        }
    }

    /// <summary>The access line's text written into <paramref name="destination"/>; false when it does not fit.</summary>
    public bool TryFormat(Span<char> destination, out int written) => destination.TryWrite(CultureInfo.InvariantCulture,
        $"{method} {path} {status} forward={forward} upstream={upstream} attempts={attempts} duration_ms={durationMs:F1} bytes={bytes} outcome={outcome} group={group} model={model} client={client} request_id={requestId}",
        out written);

    public int Count => 14;

    public KeyValuePair<string, object?> this[int index] => index switch
    {
        0 => new("Method", method),
        1 => new("Path", path),
        2 => new("Status", status),
        3 => new("Forward", forward),
        4 => new("Upstream", upstream),
        5 => new("Attempts", attempts),
        6 => new("DurationMs", durationMs),
        7 => new("Bytes", bytes),
        8 => new("Outcome", outcome),
        9 => new("RequestId", requestId),
        10 => new("Group", group),
        11 => new("Model", model),
        12 => new("Client", client),
        13 => new("{OriginalFormat}", Template),
        _ => throw new IndexOutOfRangeException(nameof(index)),
    };

    public IEnumerator<KeyValuePair<string, object?>> GetEnumerator()
    {
        for (var i = 0; i < Count; i++)
        {
            yield return this[i];
        }
    }

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();
}
