using System.Diagnostics;

namespace LLMProxy.Forwarding;

/// <summary>
/// Decides whether a streamed chunk that arrived on a socket event thread goes on to the client from there or from the
/// thread pool. With inline socket completions (Hosting/SocketTuning.cs) the thread that saw the upstream's bytes also
/// scans, filters, writes and sends them to the client, which is the cheapest way while that thread has time to spare.
/// When it carries many streams' chunks it becomes a queue — every stream's chunk waits behind the ones before it, and
/// one preemption stalls them all (bench/RESULTS.md: +62 ms p99 at 500 streams on 2 cores). Above
/// <see cref="BusyChunksPerSecond"/> on that thread, each chunk's way on moves to the pool, where two cores share it,
/// and the event thread goes straight back to dispatching. Below it, the hop would only cost a wake-up per chunk.
/// Off with <c>LLMPROXY_CHUNK_RELIEF=0</c> (for A/B runs, bench/README.md).
/// </summary>
internal static class ChunkRelief
{
    public const string Variable = "LLMPROXY_CHUNK_RELIEF";

    public static readonly bool Enabled = Environment.GetEnvironmentVariable(Variable) != "0";

    /// <summary>Chunks per second through one event thread above which they move to the pool: at ~40–60 µs each on the
    /// reference box, a fifth to a third of a core spent on chunks alone. Measured (bench/RESULTS.md): a hop for every
    /// chunk paid up to +80 % CPU per chunk at 200 streams × 20 chunks/s for little gain, and cut p99 from +62 to +6 ms
    /// at 500 streams.</summary>
    public const int BusyChunksPerSecond = 5_000;

    /// <summary>The rate is judged over windows this long: short enough that a burst of streams is relieved within a
    /// few of its chunks (100 ms windows kept half the stall: +45 against +16 ms p99 at 500 streams, same run).</summary>
    public static readonly TimeSpan Window = TimeSpan.FromMilliseconds(20);

    [ThreadStatic]
    private static ChunkRate? t_rate;

    /// <summary>Counts a chunk that just arrived on the current thread; true when it should go on from the pool.</summary>
    public static bool ShouldHop()
    {
        if (!Enabled || Thread.CurrentThread.IsThreadPoolThread)
        {
            return false; // already where the hop would take it (inline completions off, or a pool thread's completion)
        }
        return (t_rate ??= new ChunkRate(BusyChunksPerSecond, (long)(Window.TotalSeconds * Stopwatch.Frequency), Stopwatch.Frequency)).Count(Stopwatch.GetTimestamp());
    }
}

/// <summary>
/// The chunk rate of one thread, judged over windows of <c>window</c> ticks: <see cref="Count"/> answers whether the
/// last complete window was above the limit. Every chunk is counted, hopped or not, so the judgement never depends on
/// its own earlier answers.
/// </summary>
internal sealed class ChunkRate(int limitPerSecond, long window, long ticksPerSecond)
{
    private long _windowStart = long.MinValue;
    private long _chunks;
    private bool _busy;

    /// <param name="now">A timestamp in ticks of <c>ticksPerSecond</c>.</param>
    public bool Count(long now)
    {
        if (_windowStart == long.MinValue)
        {
            _windowStart = now;
        }
        _chunks++;
        var elapsed = now - _windowStart;
        if (elapsed >= window)
        {
            // A quiet spell longer than a window counts in full: a burst after it starts not busy.
            _busy = _chunks * (double)ticksPerSecond > limitPerSecond * (double)elapsed;
            _windowStart = now;
            _chunks = 0;
        }
        return _busy;
    }
}
