namespace LLMProxy.LoadBalancing;

/// <summary><c>iphash</c>: builds a <see cref="IpHashBalancer"/>.</summary>
internal sealed class IpHashPolicy : ILoadBalancingPolicy
{
    public const string PolicyName = "iphash";

    public string Name => PolicyName;

    public ILoadBalancer Create(IReadOnlyList<BalancerMember> members)
    {
        ArgumentNullException.ThrowIfNull(members);
        return new IpHashBalancer(members);
    }
}

/// <summary>
/// <c>iphash</c>: rendezvous (highest-random-weight) hashing. Each member's score for a client is
/// mix(<see cref="ClientHash"/> of the client IP, memberHash) and the eligible member with the highest score wins, so a
/// client sticks to its member while that member is eligible, and when a member becomes ineligible only its own clients
/// move (each to its next-highest member). Member hashes come from the member names with a stable hash, so the mapping
/// survives restarts and reordering of the member list. Unequal weights use weighted rendezvous (score = w / -ln(u)),
/// which keeps both properties and gives each member a share proportional to its weight; equal weights take the
/// integer fast path.
/// </summary>
internal sealed class IpHashBalancer : ILoadBalancer
{
    private readonly ulong[] _memberHashes;
    private readonly double[]? _weights; // null when all weights are equal

    public IpHashBalancer(IReadOnlyList<BalancerMember> members)
    {
        ArgumentNullException.ThrowIfNull(members);
        ArgumentOutOfRangeException.ThrowIfLessThan(members.Count, 1);
        _memberHashes = new ulong[members.Count];
        bool equal = true;
        for (int i = 0; i < members.Count; i++)
        {
            _memberHashes[i] = StableHash.OfString(members[i].Name);
            equal &= Math.Max(1, members[i].Weight) == Math.Max(1, members[0].Weight);
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

    public int Select(ReadOnlySpan<bool> eligible, in BalancingContext context)
    {
        Eligibility.CheckLength(eligible, _memberHashes.Length);
        // Hashed here, not by the caller: only this policy needs it.
        ulong clientHash = ClientHash.Of(context.Client);
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

                ulong score = Score(clientHash, hashes[i]);
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
            double u = ((Score(clientHash, hashes[i]) >> 11) + 0.5) * (1.0 / (1UL << 53));
            double score = weights[i] / -Math.Log(u);
            if (best < 0 || score > bestWeighted)
            {
                best = i;
                bestWeighted = score;
            }
        }

        return best;
    }

    internal static ulong Score(ulong clientHash, ulong memberHash) => StableHash.Mix64(clientHash ^ memberHash);
}
