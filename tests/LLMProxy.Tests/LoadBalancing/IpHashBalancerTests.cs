using System.Net;
using LLMProxy.LoadBalancing;

namespace LLMProxy.Tests.LoadBalancing;

public class IpHashBalancerTests
{
    private static BalancingContext[] SyntheticClients(int n)
    {
        var clients = new BalancingContext[n];
        for (int i = 0; i < n; i++)
        {
            clients[i] = new BalancingContext(new IPAddress(new byte[] { 10, (byte)(i >> 16), (byte)(i >> 8), (byte)i }));
        }

        return clients;
    }

    [Fact]
    public void Select_SameClient_AlwaysSameMember()
    {
        var ih = new IpHashBalancer(BalancerTestKit.Members(1, 1, 1, 1, 1));
        bool[] all = BalancerTestKit.All(5);
        foreach (BalancingContext client in SyntheticClients(200))
        {
            int first = ih.Select(all, client);
            for (int i = 0; i < 5; i++)
            {
                Assert.Equal(first, ih.Select(all, client));
            }
        }
    }

    [Fact]
    public void Select_10kClients_SpreadRoughlyEvenly()
    {
        var ih = new IpHashBalancer(BalancerTestKit.Members(1, 1, 1, 1, 1));
        bool[] all = BalancerTestKit.All(5);
        var counts = new int[5];
        foreach (BalancingContext client in SyntheticClients(10_000))
        {
            counts[ih.Select(all, client)]++;
        }

        Assert.All(counts, c => Assert.InRange(c, 1_800, 2_200));
    }

    [Fact]
    public void Select_OneOfFiveRemoved_OnlyItsClientsMove()
    {
        var ih = new IpHashBalancer(BalancerTestKit.Members(1, 1, 1, 1, 1));
        bool[] all = BalancerTestKit.All(5);
        bool[] withoutC = [true, true, false, true, true];
        BalancingContext[] clients = SyntheticClients(10_000);
        int moved = 0, ofRemoved = 0;
        var receivedFromRemoved = new int[5];
        foreach (BalancingContext client in clients)
        {
            int before = ih.Select(all, client);
            int after = ih.Select(withoutC, client);
            if (before == 2)
            {
                ofRemoved++;
                receivedFromRemoved[after]++;
            }
            else
            {
                Assert.Equal(before, after); // nobody else moves
            }

            moved += before != after ? 1 : 0;
        }

        Assert.Equal(ofRemoved, moved);
        Assert.InRange(moved, 1_800, 2_200); // ≈ 1/5 of the clients
        // The removed member's clients spread over the others instead of piling onto one neighbour.
        Assert.All(new[] { 0, 1, 3, 4 }, i => Assert.InRange(receivedFromRemoved[i], ofRemoved / 4 - 150, ofRemoved / 4 + 150));
    }

    [Fact]
    public void Select_MemberComesBack_ItsClientsReturn()
    {
        var ih = new IpHashBalancer(BalancerTestKit.Members(1, 1, 1));
        bool[] all = BalancerTestKit.All(3);
        foreach (BalancingContext client in SyntheticClients(1_000))
        {
            int before = ih.Select(all, client);
            ih.Select([before != 0, before != 1, before != 2], client);
            Assert.Equal(before, ih.Select(all, client));
        }
    }

    [Fact]
    public void Select_MembersReordered_ClientKeepsItsMemberByName()
    {
        BalancerMember[] members = BalancerTestKit.Members(1, 1, 1, 1);
        var ih = new IpHashBalancer(members);
        var reversed = new IpHashBalancer(members.Reverse().ToArray());
        bool[] all = BalancerTestKit.All(4);
        foreach (BalancingContext client in SyntheticClients(1_000))
        {
            Assert.Equal(members[ih.Select(all, client)].Name, members[3 - reversed.Select(all, client)].Name);
        }
    }

    [Fact]
    public void Select_Weights_DoNotChangeTheSpread()
    {
        // The reference table: weight applies to weighted_roundrobin only. A reference config with weights and iphash
        // must put every client where equal weights put it.
        var weighted = new IpHashPolicy().Create(BalancerTestKit.Members(3, 1, 2));
        var equal = new IpHashPolicy().Create(BalancerTestKit.Members(1, 1, 1));
        bool[] all = BalancerTestKit.All(3);
        var counts = new int[3];
        foreach (BalancingContext client in SyntheticClients(10_000))
        {
            int chosen = weighted.Select(all, client);
            Assert.Equal(equal.Select(all, client), chosen);
            counts[chosen]++;
        }

        Assert.All(counts, c => Assert.InRange(c, 3_000, 3_700));
    }

    [Fact]
    public void Select_DifferentClients_UseDifferentMembers()
    {
        var ih = new IpHashBalancer(BalancerTestKit.Members(1, 1, 1));
        bool[] all = BalancerTestKit.All(3);
        Assert.Equal(3, SyntheticClients(100).Select(c => ih.Select(all, c)).Distinct().Count());
    }
}
