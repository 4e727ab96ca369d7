namespace LLMProxy.LoadBalancing;

/// <summary>
/// Rendezvous (highest-random-weight) hashing over a fixed member list, shared by <c>iphash</c> (keyed by the client IP,
/// weights ignored) and prompt-cache affinity (keyed by a session string, weighted). Each member's score for a key is
/// mix(keyHash ^ memberHash) and the eligible member with the highest score wins, so a key sticks to its member while
/// that member is eligible, and when a member becomes ineligible only its own keys move (each to its next-highest
/// member). Member hashes come from the member names with a stable hash, so the mapping survives restarts, reordering
/// of the member list and is the same in every proxy instance. When weighted, unequal weights use weighted rendezvous
/// (score = w / -ln(u)), which keeps both properties and gives each member a share proportional to its weight; equal
/// weights take the integer fast path. Immutable, so thread-safe; allocation-free per call.
/// </summary>
internal sealed class Rendezvous
{
    private readonly ulong[] _memberHashes;
    private readonly double[]? _weights; // null when all weights are equal

    /// <param name="weighted">Whether member weights shape the shares; false scores every member alike.</param>
    public Rendezvous(IReadOnlyList<BalancerMember> members, bool weighted)
    {
        ArgumentNullException.ThrowIfNull(members);
        ArgumentOutOfRangeException.ThrowIfLessThan(members.Count, 1);
        _memberHashes = new ulong[members.Count];
        bool equal = !weighted || members.All(m => Math.Max(1, m.Weight) == Math.Max(1, members[0].Weight));
        for (int i = 0; i < members.Count; i++)
        {
            _memberHashes[i] = StableHash.OfString(members[i].Name);
        }

        if (!equal)
        {
            _weights = new double[members.Count];
            for (int i = 0; i < members.Count; i++)
            {
                _weights[i] = Math.Max(1, members[i].Weight);
            }
        }
    }

    public int Count => _memberHashes.Length;

    /// <summary>The eligible member with the highest score for <paramref name="keyHash"/>, or -1 when none is eligible.</summary>
    public int Select(ReadOnlySpan<bool> eligible, ulong keyHash)
    {
        Eligibility.CheckLength(eligible, _memberHashes.Length);
        ulong[] hashes = _memberHashes;
        int best = -1;
        if (_weights is null)
        {
            ulong bestScore = 0;
            for (int i = 0; i < hashes.Length; i++)
            {
                if (!eligible[i])
                {
                    continue;
                }

                ulong score = Score(keyHash, hashes[i]);
                if (best < 0 || score > bestScore)
                {
                    best = i;
                    bestScore = score;
                }
            }

            return best;
        }

        double[] weights = _weights;
        double bestWeighted = 0;
        for (int i = 0; i < hashes.Length; i++)
        {
            if (!eligible[i])
            {
                continue;
            }

            // u in (0, 1) from the top 53 bits; -ln(u) > 0, so the score is positive and finite.
            double u = ((Score(keyHash, hashes[i]) >> 11) + 0.5) * (1.0 / (1UL << 53));
            double score = weights[i] / -Math.Log(u);
            if (best < 0 || score > bestWeighted)
            {
                best = i;
                bestWeighted = score;
            }
        }

        return best;
    }

    internal static ulong Score(ulong keyHash, ulong memberHash) => StableHash.Mix64(keyHash ^ memberHash);
}
