namespace LLMProxy.Runtime;

/// <summary>
/// Requests and LLM tokens of one upstream in the last minute, for the admin API and status page: 60 one-second slots
/// per count on the injected <see cref="TimeProvider"/>. Written by hand because it sits on the hot path: an add is one
/// coarse clock read and one compare-and-swap on a slot that packs its second (upper bits) with its count (lower bits), so a
/// slot from a minute ago is reset by the same CAS that adds to it — no lock, no allocation, no timer. Reading sums the
/// slots whose second lies within the last 60 (only the admin API reads).
/// </summary>
internal sealed class RecentCounter
{
    private const int Slots = 60;
    private const int CountBits = 40;
    private const long CountMask = (1L << CountBits) - 1;
    private const long StampMask = (1L << (63 - CountBits)) - 1; // 2^23 s ≈ 97 days before a stamp repeats

    private readonly long[] _requests = new long[Slots];
    private readonly long[] _tokens = new long[Slots];
    private readonly TimeProvider _time;
    private readonly long _frequency;
    private readonly bool _system;

    public RecentCounter(TimeProvider time)
    {
        _time = time;
        _frequency = time.TimestampFrequency;
        _system = ReferenceEquals(time, TimeProvider.System);
    }

    /// <summary>Counts one request sent to the upstream.</summary>
    public void AddRequest() => Add(_requests, 1);

    /// <summary>Counts <paramref name="tokens"/> LLM tokens an answer reported (a negative count is ignored; a slot
    /// saturates instead of overflowing, whatever an upstream reports).</summary>
    public void AddTokens(long tokens)
    {
        if (tokens > 0)
        {
            Add(_tokens, tokens);
        }
    }

    /// <summary>Requests counted in the last minute.</summary>
    public long Requests => Sum(_requests);

    /// <summary>LLM tokens counted in the last minute.</summary>
    public long Tokens => Sum(_tokens);

    // The system clock's seconds come from the coarse tick count (no clock hardware read: a few ns where a precise
    // timestamp can cost ~60 ns on a VM); any other TimeProvider (fake time in tests) is asked directly.
    private long Second() => _system ? Environment.TickCount64 / 1000 : _time.GetTimestamp() / _frequency;

    private void Add(long[] slots, long n)
    {
        var second = Second();
        ref var slot = ref slots[(int)(second % Slots)];
        var stamp = (second & StampMask) << CountBits;
        var seen = Volatile.Read(ref slot);
        while (true)
        {
            long next;
            if ((seen & ~CountMask) == stamp)
            {
                var count = seen & CountMask;
                next = stamp | (count + Math.Min(n, CountMask - count));
            }
            else
            {
                next = stamp | Math.Min(n, CountMask);
            }
            var was = Interlocked.CompareExchange(ref slot, next, seen);
            if (was == seen)
            {
                return;
            }
            seen = was;
        }
    }

    private long Sum(long[] slots)
    {
        var now = Second() & StampMask;
        long sum = 0;
        for (var i = 0; i < Slots; i++)
        {
            var value = Volatile.Read(ref slots[i]);
            var age = (now - (value >>> CountBits)) & StampMask;
            if (value != 0 && age < Slots)
            {
                sum += value & CountMask;
            }
        }
        return sum;
    }
}
