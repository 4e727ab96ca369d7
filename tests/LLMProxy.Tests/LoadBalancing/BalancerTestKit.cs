using System.Net;
using LLMProxy.LoadBalancing;

namespace LLMProxy.Tests.LoadBalancing;

internal static class BalancerTestKit
{
    /// <summary>A request context for strategies that ignore the client.</summary>
    public static readonly BalancingContext Anyone = new(IPAddress.Loopback);

    public static BalancerMember[] Members(params int[] weights)
    {
        var members = new BalancerMember[weights.Length];
        for (int i = 0; i < weights.Length; i++)
        {
            members[i] = new BalancerMember($"up{(char)('a' + i)}", weights[i]);
        }

        return members;
    }

    public static bool[] All(int n) => Enumerable.Repeat(true, n).ToArray();

    public static int[] Count(ILoadBalancer balancer, int members, int picks, bool[]? eligible = null)
    {
        eligible ??= All(members);
        var counts = new int[members];
        for (int i = 0; i < picks; i++)
        {
            counts[balancer.Select(eligible, Anyone)]++;
        }

        return counts;
    }

    public static int[] CountParallel(ILoadBalancer balancer, int members, int picks)
    {
        var counts = new int[members];
        Parallel.For(0, picks, new ParallelOptions { MaxDegreeOfParallelism = 4 }, _ =>
        {
            Span<bool> eligible = stackalloc bool[members];
            eligible.Fill(true);
            Interlocked.Increment(ref counts[balancer.Select(eligible, Anyone)]);
        });
        return counts;
    }
}
