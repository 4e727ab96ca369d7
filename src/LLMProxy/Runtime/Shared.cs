namespace LLMProxy.Runtime;

/// <summary>
/// One owner's reference to a disposable that consecutive runtimes share across reloads (a group's connection pool, a
/// forward's client buckets). A reload that keeps the resource takes another reference with <see cref="Share"/>; each
/// runtime disposes its own reference when it is retired, and the resource is disposed with the last reference — so the
/// runtime retired first never closes a pool its successor still sends through.
/// </summary>
internal sealed class Shared<T> : IDisposable where T : class, IDisposable
{
    private readonly Owners _owners;
    private int _released;

    private Shared(Owners owners) => _owners = owners;

    /// <summary>The first reference to <paramref name="value"/>, which it now owns.</summary>
    public static Shared<T> Create(T value)
    {
        ArgumentNullException.ThrowIfNull(value);
        return new Shared<T>(new Owners(value));
    }

    public T Value => _owners.Value;

    /// <summary>Another reference to the same value. Only from a reference not yet disposed: that one keeps the count
    /// above zero, so a disposed value can never come back to life.</summary>
    public Shared<T> Share()
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _released) != 0, this);
        Interlocked.Increment(ref _owners.Count);
        return new Shared<T>(_owners);
    }

    /// <summary>Releases this reference (once, however often called); the last one disposes the value.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _released, 1) == 0 && Interlocked.Decrement(ref _owners.Count) == 0)
        {
            _owners.Value.Dispose();
        }
    }

    private sealed class Owners(T value)
    {
        public readonly T Value = value;
        public int Count = 1;
    }
}
