using LLMProxy.Hosting;
using Microsoft.Extensions.Time.Testing;

namespace LLMProxy.Tests.Hosting;

public class IdleMemoryTrimmerTests
{
    private sealed class Rig
    {
        public int Active;
        public long Allocated;
        public int Collections;
        public FakeTimeProvider Time { get; } = new();
        public IdleMemoryTrimmer Trimmer { get; }

        public Rig() => Trimmer = new IdleMemoryTrimmer(() => Active, Time, TimeSpan.FromSeconds(5), threshold: 100,
            allocatedBytes: () => Allocated, collect: () => Collections++);

        public void Tick() => Time.Advance(TimeSpan.FromSeconds(5));
    }

    [Fact]
    public void Trimmer_IdleTwoChecksAfterBigAllocation_CollectsOnce()
    {
        var rig = new Rig();
        rig.Active = 5;
        rig.Allocated = 1_000;
        rig.Tick();
        rig.Active = 0;
        rig.Tick(); // first idle check: not yet
        Assert.Equal(0, rig.Collections);
        rig.Tick(); // idle twice in a row
        Assert.Equal(1, rig.Collections);
        rig.Tick();
        rig.Tick(); // nothing new allocated: no more collections
        Assert.Equal(1, rig.Collections);
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
