using LLMProxy.LoadBalancing;
using static LLMProxy.Tests.LoadBalancing.BalancerTestKit;

namespace LLMProxy.Tests.LoadBalancing;

public class LeastLoadedBalancerTests
{
    /// <summary>In-flight counts and headrooms set by the test.</summary>
    private sealed class FakeLoad(int[] inFlight, long[]? headroom = null) : IMemberLoad
    {
        public int[] Counts { get; } = inFlight;
        public int InFlight(int index) => Counts[index];
        public long Headroom(int index) => headroom?[index] ?? long.MaxValue;
    }

    private static BalancingContext With(IMemberLoad load) => new(Anyone.Client) { Load = load };

    [Fact]
    public void TwoMembers_TakesTheLessLoaded()
    {
        var lb = new LeastLoadedBalancer(Members(1, 1), new Random(1));

        Assert.Equal(1, lb.Select(All(2), With(new FakeLoad([3, 1]))));
        Assert.Equal(0, lb.Select(All(2), With(new FakeLoad([0, 1]))));
    }

    [Fact]
    public void Weights_DivideTheLoad()
    {
        var lb = new LeastLoadedBalancer(Members(3, 1), new Random(1));

        // 2/3 < 1/1: the heavier member is less loaded per weight.
        Assert.Equal(0, lb.Select(All(2), With(new FakeLoad([2, 1]))));
        // 4/3 > 1/1.
        Assert.Equal(1, lb.Select(All(2), With(new FakeLoad([4, 1]))));
    }

    [Fact]
    public void EqualLoad_LargerHeadroomWins_ThenLowerIndex()
    {
        var lb = new LeastLoadedBalancer(Members(1, 1), new Random(1));

        Assert.Equal(1, lb.Select(All(2), With(new FakeLoad([2, 2], [10, 500]))));
        Assert.Equal(0, lb.Select(All(2), With(new FakeLoad([2, 2], [10, 10]))));
        Assert.Equal(0, lb.Select(All(2), Anyone)); // no load known: every member idle, index order
    }

    [Fact]
    public void Ineligible_NeverChosen_EvenWhenIdle()
    {
        var lb = new LeastLoadedBalancer(Members(1, 1, 1), new Random(1));
        var load = With(new FakeLoad([0, 9, 5]));

        for (var i = 0; i < 50; i++)
        {
            Assert.Equal(2, lb.Select([false, true, true], load));
        }
        Assert.Equal(1, lb.Select([false, true, false], load));
        Assert.Equal(-1, lb.Select([false, false, false], load));
    }

    [Fact]
    public void PowerOfTwo_MostLoadedNeverChosen_LeastLoadedMostOften()
    {
        var lb = new LeastLoadedBalancer(Members(1, 1, 1, 1), new Random(7));
        var load = With(new FakeLoad([5, 1, 3, 8]));
        var counts = new int[4];

        for (var i = 0; i < 600; i++)
        {
            counts[lb.Select(All(4), load)]++;
        }

        // Two distinct candidates: the strict maximum always loses its pair, the minimum always wins its own.
        Assert.Equal(0, counts[3]);
        Assert.True(counts[1] > counts[0] && counts[1] > counts[2], string.Join(',', counts));
        // The minimum is drawn into half of all pairs (3 of 6): about 300 of 600.
        Assert.InRange(counts[1], 240, 360);
    }

    [Fact]
    public void SeededRandom_SameSequence()
    {
        var load = With(new FakeLoad([1, 1, 1, 1, 1], [5, 4, 3, 2, 1]));
        var a = new LeastLoadedBalancer(Members(1, 1, 1, 1, 1), new Random(42));
        var b = new LeastLoadedBalancer(Members(1, 1, 1, 1, 1), new Random(42));

        var sa = Enumerable.Range(0, 50).Select(_ => a.Select(All(5), load)).ToArray();
        var sb = Enumerable.Range(0, 50).Select(_ => b.Select(All(5), load)).ToArray();

        Assert.Equal(sa, sb);
        Assert.True(sa.Distinct().Count() > 1); // really drawn, not always the same pair
    }

    [Fact]
    public void Registered_ByName()
    {
        Assert.True(LoadBalancingPolicies.BuiltIn.TryGet("least_loaded", out var policy));
        Assert.IsType<LeastLoadedBalancer>(policy.Create(Members(1, 1)));
    }
}
