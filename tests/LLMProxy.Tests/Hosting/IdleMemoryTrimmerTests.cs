using LLMProxy.Hosting;
using Microsoft.Extensions.Time.Testing;

namespace LLMProxy.Tests.Hosting;

public class IdleMemoryTrimmerTests
{
    private sealed class Rig
    {
        public int Active;
        public long Started;
        public long Allocated;
        public int Collections;
        public FakeTimeProvider Time { get; } = new();
        public IdleMemoryTrimmer Trimmer { get; }

        public Rig() => Trimmer = new IdleMemoryTrimmer(() => Active, () => Started, Time, TimeSpan.FromSeconds(5), threshold: 100,
            allocatedBytes: () => Allocated, collect: () => Collections++);

        public void Tick() => Time.Advance(TimeSpan.FromSeconds(5));
    }

    [Fact]
    public void Trimmer_QuietIntervalAfterBigAllocation_CollectsOnce()
    {
        var rig = new Rig();
        rig.Active = 5;
        rig.Started = 5;
        rig.Allocated = 1_000;
        rig.Tick(); // busy interval
        Assert.Equal(0, rig.Collections);
        rig.Active = 0;
        rig.Tick(); // a whole interval without a new request and nothing in flight
        Assert.Equal(1, rig.Collections);
        rig.Tick();
        rig.Tick(); // nothing new allocated: no more collections
        Assert.Equal(1, rig.Collections);
    }

    [Fact]
    public void Trimmer_LongStreamInFlight_NeverCollects()
    {
        var rig = new Rig { Active = 1, Started = 1, Allocated = 1_000_000 };
        for (var i = 0; i < 10; i++)
        {
            rig.Tick();
        }
        Assert.Equal(0, rig.Collections);
    }

    [Fact]
    public void Trimmer_LightTrafficBetweenRequestsAtEveryCheck_NeverCollects()
    {
        var rig = new Rig { Allocated = 1_000_000 };
        for (var i = 0; i < 10; i++)
        {
            rig.Started += 3; // requests came and went within the interval; none in flight at the check
            rig.Tick();
        }
        Assert.Equal(0, rig.Collections);
    }

    [Fact]
    public void Trimmer_BusyOrLittleAllocated_NeverCollects()
    {
        var rig = new Rig();
        rig.Active = 1;
        rig.Allocated = 1_000_000;
        for (var i = 0; i < 5; i++)
        {
            rig.Tick();
        }
        Assert.Equal(0, rig.Collections);

        var quiet = new Rig();
        quiet.Allocated = 50; // below the threshold
        for (var i = 0; i < 5; i++)
        {
            quiet.Tick();
        }
        Assert.Equal(0, quiet.Collections);
    }
}
