namespace LLMProxy.Hosting;

/// <summary>
/// The socket engine settings the proxy runs with unless the operator set them (bench/RESULTS.md has the A/Bs).
/// System.Net.Sockets reads both environment variables once, in the static constructor of its epoll engine, i.e. when
/// the process makes its first socket — so <see cref="Apply"/> runs first thing in <c>Program.cs</c>.
/// <list type="bullet">
/// <item><c>DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS=1</c>: socket continuations run on the epoll thread instead of
/// hopping to the thread pool (the proxy's request path is fully asynchronous; logging is a lock-free enqueue).</item>
/// <item><c>DOTNET_SYSTEM_NET_SOCKETS_THREAD_COUNT</c>: with inline completions the runtime starts one epoll thread
/// per core. On a machine with at most <see cref="SingleEngineMaxCores"/> cores one thread is set: two event threads
/// on two cores keep waking each other's peers and get preempted by the load they serve (−26 % CPU per request
/// measured on the 2-core reference box). On more cores the runtime's default (one per core) stays.</item>
/// </list>
/// </summary>
internal static class SocketTuning
{
    public const string InlineCompletions = "DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS";
    public const string ThreadCount = "DOTNET_SYSTEM_NET_SOCKETS_THREAD_COUNT";

    /// <summary>Up to this many cores, one socket event thread.</summary>
    public const int SingleEngineMaxCores = 2;

    /// <summary>Sets what the operator did not set; returns the settings applied, for tests.</summary>
    public static IReadOnlyDictionary<string, string> Apply(int processorCount, Func<string, string?>? get = null, Action<string, string>? set = null)
    {
        get ??= Environment.GetEnvironmentVariable;
        set ??= (name, value) => Environment.SetEnvironmentVariable(name, value);
        var applied = new Dictionary<string, string>();
        foreach (var (name, value) in Defaults(processorCount))
        {
            if (get(name) is null)
            {
                set(name, value);
                applied[name] = value;
            }
        }
        return applied;
    }

    private static IEnumerable<(string Name, string Value)> Defaults(int processorCount)
    {
        yield return (InlineCompletions, "1");
        if (processorCount <= SingleEngineMaxCores)
        {
            yield return (ThreadCount, "1");
        }
    }
}
