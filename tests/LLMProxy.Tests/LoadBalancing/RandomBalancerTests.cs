using LLMProxy.LoadBalancing;

namespace LLMProxy.Tests.LoadBalancing;

public class RandomBalancerTests
{
    // Chi-square critical values at p = 0.001 for df = 3 and df = 2.
    private const double Chi2Df3 = 16.27;
    private const double Chi2Df2 = 13.82;

    private static double ChiSquare(int[] counts, int[] expectedMembers)
    {
        double expected = (double)expectedMembers.Sum(i => counts[i]) / expectedMembers.Length;
        return expectedMembers.Sum(i => (counts[i] - expected) * (counts[i] - expected) / expected);
    }

    [Fact]
    public void Select_SeededRandom_UniformByChiSquare()
    {
        var rb = new RandomBalancer(4, new Random(12345));
        int[] counts = BalancerTestKit.Count(rb, 4, 40_000);
        Assert.True(ChiSquare(counts, [0, 1, 2, 3]) < Chi2Df3, string.Join(",", counts));
    }

    [Fact]
    public void Select_SomeIneligible_UniformAmongEligibleOnly()
    {
        var rb = new RandomBalancer(5, new Random(7));
        int[] counts = BalancerTestKit.Count(rb, 5, 30_000, [true, false, true, false, true]);
        Assert.Equal(0, counts[1] + counts[3]);
        Assert.True(ChiSquare(counts, [0, 2, 4]) < Chi2Df2, string.Join(",", counts));
    }

    [Fact]
    public void Select_SameSeed_SameSequence()
    {
        var a = new RandomBalancer(6, new Random(99));
        var b = new RandomBalancer(6, new Random(99));
        bool[] all = BalancerTestKit.All(6);
        for (int i = 0; i < 100; i++)
        {
            Assert.Equal(a.Select(all, BalancerTestKit.Anyone), b.Select(all, BalancerTestKit.Anyone));
        }
    }

    [Fact]
    public void Select_NotARotatingCounter_ConsecutivePicksRepeatSometimes()
    {
        var rb = new RandomBalancer(3, new Random(3));
        bool[] all = BalancerTestKit.All(3);
        int repeats = 0, previous = -1;
        for (int i = 0; i < 3000; i++)
        {
            int pick = rb.Select(all, BalancerTestKit.Anyone);
            repeats += pick == previous ? 1 : 0;
            previous = pick;
        }

        Assert.InRange(repeats, 800, 1200); // ≈ 1/3 of picks for a random source, 0 for a rotation
    }

    [Fact]
    public void Select_InjectedRandomUnderConcurrency_StaysInRangeAndCountsAll()
    {
        var rb = new RandomBalancer(3, new Random(5));
        int[] counts = BalancerTestKit.CountParallel(rb, 3, 60_000);
        Assert.Equal(60_000, counts.Sum());
        Assert.All(counts, c => Assert.InRange(c, 18_000, 22_000));
    }

    [Fact]
    public void Select_DefaultSharedRandom_Works()
    {
        var rb = new RandomBalancer(2);
        int[] counts = BalancerTestKit.Count(rb, 2, 10_000);
        Assert.All(counts, c => Assert.InRange(c, 4_500, 5_500));
    }
}
