using System.Runtime;

namespace LLMProxy.Hosting;

/// <summary>
/// Gives memory back after a burst. Server GC sizes its heaps for the load it saw and an idle process
/// allocates nothing that would trigger a collection, so after (say) 1,000 streams the heap stays large.
/// When no request was in flight at two checks in a row and enough was allocated since the last trim,
/// this runs one aggressive, compacting full collection, which also decommits the freed memory.
/// </summary>
internal sealed class IdleMemoryTrimmer : IDisposable
{
    public static readonly TimeSpan DefaultInterval = TimeSpan.FromSeconds(5);
    public const long DefaultThreshold = 32L * 1024 * 1024;

    private readonly Func<int> _activeRequests;
    private readonly Func<long> _allocatedBytes;
    private readonly Action _collect;
    private readonly long _threshold;
    private readonly ITimer _timer;
    private long _allocatedAtLastTrim;
    private bool _idleAtLastCheck;

    public IdleMemoryTrimmer(Func<int> activeRequests, TimeProvider time, TimeSpan? interval = null, long threshold = DefaultThreshold,
        Func<long>? allocatedBytes = null, Action? collect = null)
    {
        _activeRequests = activeRequests;
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
        var idle = _activeRequests() == 0;
        if (idle && _idleAtLastCheck && _allocatedBytes() - _allocatedAtLastTrim >= _threshold)
        {
            _collect();
            _allocatedAtLastTrim = _allocatedBytes();
            Trims++;
        }
        _idleAtLastCheck = idle;
    }

    private static void Collect()
    {
        GCSettings.LargeObjectHeapCompactionMode = GCLargeObjectHeapCompactionMode.CompactOnce;
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
    }

    public void Dispose() => _timer.Dispose();
}
