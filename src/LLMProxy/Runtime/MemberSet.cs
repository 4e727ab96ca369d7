namespace LLMProxy.Runtime;

/// <summary>
/// A set of a group's members by index — tried, or not serving a request's model. One word holds the first 64, so a
/// group of up to 64 members costs a <see cref="ulong"/>; beyond that, further words in an array. A value: the array
/// is never changed in place (an <see cref="Add"/> or <see cref="UnionWith"/> that touches it copies it first), so a copy
/// of a set is never changed through another.
/// </summary>
internal struct MemberSet
{
    private ulong _low;
    private ulong[]? _high; // word k: members 64 (k + 1) to 64 (k + 2) - 1

    public readonly bool Contains(int index)
    {
        if (index < 64)
        {
            return (_low & (1UL << index)) != 0;
        }
        var word = (index >> 6) - 1;
        return _high is { } high && word < high.Length && (high[word] & (1UL << (index & 63))) != 0;
    }

    public void Add(int index)
    {
        if (index < 64)
        {
            _low |= 1UL << index;
            return;
        }
        var word = (index >> 6) - 1;
        var high = new ulong[Math.Max(word + 1, _high?.Length ?? 0)];
        _high?.CopyTo(high, 0);
        high[word] |= 1UL << (index & 63);
        _high = high;
    }

    public void UnionWith(in MemberSet other)
    {
        _low |= other._low;
        if (other._high is not { } theirs)
        {
            return;
        }
        var high = new ulong[Math.Max(theirs.Length, _high?.Length ?? 0)];
        _high?.CopyTo(high, 0);
        for (var i = 0; i < theirs.Length; i++)
        {
            high[i] |= theirs[i];
        }
        _high = high;
    }

    /// <summary>Whether members 0 to <paramref name="count"/> - 1 are all in the set.</summary>
    public readonly bool ContainsAll(int count)
    {
        if (count <= 64)
        {
            return count == 64 ? _low == ulong.MaxValue : (_low & ((1UL << count) - 1)) == (1UL << count) - 1;
        }
        if (_low != ulong.MaxValue)
        {
            return false;
        }
        for (var index = 64; index < count; index++)
        {
            if (!Contains(index))
            {
                return false;
            }
        }
        return true;
    }
}
