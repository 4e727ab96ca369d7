using LLMProxy.Runtime;

namespace LLMProxy.Tests.Runtime;

public class SharedTests
{
    private sealed class Resource : IDisposable
    {
        public int Disposals { get; private set; }

        public void Dispose() => Disposals++;
    }

    [Fact]
    public void Dispose_OnlyReference_DisposesValue()
    {
        var resource = new Resource();

        Shared<Resource>.Create(resource).Dispose();

        Assert.Equal(1, resource.Disposals);
    }

    [Fact]
    public void Dispose_FirstOfTwoReferences_KeepsValueUntilTheLast()
    {
        var resource = new Resource();
        var first = Shared<Resource>.Create(resource);
        var second = first.Share();

        first.Dispose();
        Assert.Equal(0, resource.Disposals);
        Assert.Same(resource, second.Value);

        second.Dispose();
        Assert.Equal(1, resource.Disposals);
    }

    [Fact]
    public void Dispose_SameReferenceTwice_CountsOnce()
    {
        var resource = new Resource();
        var first = Shared<Resource>.Create(resource);
        using var second = first.Share();

        first.Dispose();
        first.Dispose();

        Assert.Equal(0, resource.Disposals);
    }

    [Fact]
    public void Share_FromDisposedReference_Throws()
    {
        var first = Shared<Resource>.Create(new Resource());
        first.Dispose();

        Assert.Throws<ObjectDisposedException>(() => first.Share());
    }

    [Fact]
    public void Share_ChainOfReloads_ValueLivesUntilEveryRuntimeReleased()
    {
        var resource = new Resource();
        var a = Shared<Resource>.Create(resource);
        var b = a.Share();
        var c = b.Share();

        b.Dispose();
        a.Dispose();
        Assert.Equal(0, resource.Disposals);
        c.Dispose();
        Assert.Equal(1, resource.Disposals);
    }
}
