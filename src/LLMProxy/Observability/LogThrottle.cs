namespace LLMProxy.Observability;

/// <summary>
/// At most one log line per interval for an event that can repeat thousands of times a second (refused connections,
/// failed accepts): the line that gets through reports how many occurrences it stands for. The metric keeps the exact count.
/// </summary>
internal sealed class LogThrottle(TimeProvider time, TimeSpan interval)
{
    private const long Never = long.MinValue;
    private long _lastLine = Never;
    private long _since;

    /// <summary>Records one occurrence; true when a line may be written now, with the occurrences it covers.</summary>
    public bool TryEnter(out long occurrences)
    {
        Interlocked.Increment(ref _since);
        var now = time.GetTimestamp();
        var last = Volatile.Read(ref _lastLine);
        if ((last == Never || time.GetElapsedTime(last, now) >= interval) && Interlocked.CompareExchange(ref _lastLine, now, last) == last)
        {
            occurrences = Interlocked.Exchange(ref _since, 0);
            return true;
        }
        occurrences = 0;
        return false;
    }
}
