namespace LLMProxy.Runtime;

/// <summary>
/// The current compiled configuration. Each request reads it once at its start and keeps that snapshot to the
/// end, so a reload never changes the rules under a request in flight.
/// </summary>
internal sealed class RuntimeHolder(ProxyRuntime initial)
{
    private ProxyRuntime _current = initial;

    public ProxyRuntime Current => Volatile.Read(ref _current);

    /// <summary>Installs <paramref name="next"/> and returns the runtime it replaced.</summary>
    public ProxyRuntime Swap(ProxyRuntime next) => Interlocked.Exchange(ref _current, next);
}
