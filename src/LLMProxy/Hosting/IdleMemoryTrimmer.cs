using System.Runtime;

namespace LLMProxy.Hosting;

/// <summary>
/// Gives memory back after a burst. Server GC sizes its heaps for the load it saw and an idle process
/// allocates nothing that would trigger a collection, so after (say) 1,000 streams the heap stays large.
/// When no request started during a whole check interval and none is in flight, and enough was allocated
/// since the last trim, this runs one aggressive, compacting full collection, which also decommits the
/// freed memory. (Sampling only "in flight == 0" is not enough: a lightly loaded proxy is often between
/// requests at the sampling instant, and a blocking full GC then would hit live traffic.)
/// What a burst can leave behind is bounded by the gen0 budget cap (System.GC.Gen0MaxBudget in LLMProxy.csproj), so
/// the trigger stays "quiet for a whole interval" rather than "load dropped": this collection paused the process for
/// 25–117 ms on 2 cores (bench/RESULTS.md, "Issue 13: memory after a burst"), a stall every open stream would see.
/// </summary>
internal sealed class IdleMemoryTrimmer : IDisposable
{
    public static readonly TimeSpan DefaultInterval = TimeSpan.FromSeconds(5);
    public const long DefaultThreshold = 32L * 1024 * 1024;

    private readonly Func<int> _activeRequests;
    private readonly Func<long> _startedRequests;
    private readonly Func<long> _allocatedBytes;
    private readonly Action _collect;
    private readonly long _threshold;
    private readonly ITimer _timer;
    private long _allocatedAtLastTrim;
    private long _startedAtLastCheck = -1;

    public IdleMemoryTrimmer(Func<int> activeRequests, Func<long> startedRequests, TimeProvider time, TimeSpan? interval = null,
        long threshold = DefaultThreshold, Func<long>? allocatedBytes = null, Action? collect = null)
    {
        _activeRequests = activeRequests;
        _startedRequests = startedRequests;
        _allocatedBytes = allocatedBytes ?? (static () => GC.GetTotalAllocatedBytes(precise: false));
        _collect = collect ?? Collect;
        _threshold = threshold;
        _allocatedAtLastTrim = _allocatedBytes();
        var every = interval ?? DefaultInterval;
        _timer = time.CreateTimer(static s => ((IdleMemoryTrimmer)s!).Check(), this, every, every);
    }

    /// <summary>How many times memory was trimmed.</summary>
    public int Trims { get; private set; }

    private void Check()
    {
        var started = _startedRequests();
        var idle = started == _startedAtLastCheck && _activeRequests() == 0;
        _startedAtLastCheck = started;
        if (idle && _allocatedBytes() - _allocatedAtLastTrim >= _threshold)
        {
            _collect();
            _allocatedAtLastTrim = _allocatedBytes();
            Trims++;
        }
    }

    private static void Collect()
    {
        GCSettings.LargeObjectHeapCompactionMode = GCLargeObjectHeapCompactionMode.CompactOnce;
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
    }

    public void Dispose() => _timer.Dispose();
}
