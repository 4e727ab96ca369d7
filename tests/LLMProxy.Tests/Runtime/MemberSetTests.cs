using LLMProxy.Runtime;

namespace LLMProxy.Tests.Runtime;

/// <summary>The set of a group's members by index, against a plain <see cref="HashSet{T}"/> as the model.</summary>
public class MemberSetTests
{
    [Theory]
    [InlineData(1)]
    [InlineData(64)]
    [InlineData(65)]
    [InlineData(300)]
    public void RandomAddsAndUnions_AgreeWithAHashSet_AndCopiesNeverChangeThroughEachOther(int members)
    {
        var random = new Random(members);
        for (var round = 0; round < 200; round++)
        {
            var (a, modelA) = RandomSet(random, members);
            var (b, modelB) = RandomSet(random, members);
            var copy = a;
            var extra = random.Next(members);

            copy.Add(extra);
            a.UnionWith(b);
            modelA.UnionWith(modelB);

            for (var i = 0; i < members + 70; i++)
            {
                Assert.Equal(modelA.Contains(i), a.Contains(i));
                Assert.Equal(modelB.Contains(i), b.Contains(i)); // the union did not change its argument
            }
            Assert.True(copy.Contains(extra));
            Assert.Equal(modelA.Count == members, a.ContainsAll(members));
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(63)]
    [InlineData(64)]
    [InlineData(65)]
    [InlineData(129)]
    public void ContainsAll_OnlyWhenEveryMemberIsIn(int members)
    {
        var set = default(MemberSet);
        for (var i = 0; i < members - 1; i++)
        {
            set.Add(i);
        }
        Assert.False(set.ContainsAll(members));
        set.Add(members - 1);
        Assert.True(set.ContainsAll(members));
        Assert.False(set.ContainsAll(members + 1));
    }

    private static (MemberSet Set, HashSet<int> Model) RandomSet(Random random, int members)
    {
        var set = default(MemberSet);
        var model = new HashSet<int>();
        for (var i = random.Next(members + 1); i > 0; i--)
        {
            var index = random.Next(members);
            set.Add(index);
            model.Add(index);
        }
        return (set, model);
    }
}
