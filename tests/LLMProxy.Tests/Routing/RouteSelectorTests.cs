using LLMProxy.Configuration;
using LLMProxy.Routing;

namespace LLMProxy.Tests.Routing;

public class RouteSelectorTests
{
    /// <summary>The example of SPEC §12.</summary>
    private static readonly RouteSelector Spec = new(
    [
        new RouteConfig { Path = "/v1/messages", Group = "anthropic" },
        new RouteConfig { Name = "4o", Model = "gpt-4o*", Group = "openai_4o" },
        new RouteConfig { Model = "text-embedding-*", Path = "/v1/embeddings", Group = "embeddings" },
    ]);

    private static RouteSelector PathOnly(string prefix) => new([new RouteConfig { Path = prefix, Group = "g" }]);

    [Theory]
    [InlineData("/v1/messages", null, 0)]
    [InlineData("/v1/messages", "gpt-4o", 0)] // first match wins: the path route comes first
    [InlineData("/v1/chat/completions", "gpt-4o", 1)]
    [InlineData("/v1/chat/completions", "GPT-4o-mini", 1)]
    [InlineData("/v1/embeddings", "text-embedding-3-small", 2)]
    [InlineData("/v1/chat/completions", "text-embedding-3-small", -1)] // model matches, path does not
    [InlineData("/v1/embeddings", "bge-m3", -1)] // path matches, model does not
    [InlineData("/v1/embeddings", null, -1)]
    [InlineData("/v1/chat/completions", null, -1)]
    [InlineData("/v1/chat/completions", "claude-3-5-sonnet", -1)]
    public void Select_SpecExample_FirstMatchingRouteOrMinusOne(string path, string? model, int expected) =>
        Assert.Equal(expected, Spec.Select(path, model));

    [Theory]
    [InlineData("/v1/messages", true)]
    [InlineData("/v1/messages/", true)]
    [InlineData("/v1/messages/batches", true)]
    [InlineData("/v1/messages/batches/abc/results", true)]
    [InlineData("/v1/messages?beta=true", true)]
    [InlineData("/v1/messagesX", false)]
    [InlineData("/v1/messages-batches", false)]
    [InlineData("/v1/message", false)]
    [InlineData("/v1", false)]
    [InlineData("/V1/messages", false)] // paths are case-sensitive
    [InlineData("/v2/v1/messages", false)] // a prefix, not a substring
    [InlineData("", false)]
    public void Select_PathPrefix_MatchesWholeSegmentsOnly(string path, bool matches) =>
        Assert.Equal(matches ? 0 : -1, PathOnly("/v1/messages").Select(path, null));

    [Theory]
    [InlineData("/v1/messages/")]
    [InlineData("/v1/messages//")]
    public void Select_ConfigPathWithTrailingSlash_SameAsWithout(string prefix)
    {
        var selector = PathOnly(prefix);

        Assert.Equal(0, selector.Select("/v1/messages", null));
        Assert.Equal(0, selector.Select("/v1/messages/batches", null));
        Assert.Equal(-1, selector.Select("/v1/messagesX", null));
    }

    [Theory]
    [InlineData("/")]
    [InlineData("/v1/chat/completions")]
    [InlineData("")]
    public void Select_RootPrefix_MatchesEveryPath(string path) =>
        Assert.Equal(0, PathOnly("/").Select(path, null));

    [Fact]
    public void Select_ModelRoute_NeverMatchesRequestWithoutModel()
    {
        var selector = new RouteSelector([new RouteConfig { Model = "*", Group = "g" }]);

        Assert.Equal(-1, selector.Select("/v1/chat/completions", null));
        Assert.Equal(0, selector.Select("/v1/chat/completions", ""));
        Assert.Equal(0, selector.Select("/v1/chat/completions", "anything"));
    }

    [Fact]
    public void Select_PathGivenAsSpanSlice_Matches()
    {
        const string target = "/v1/messages/batches?limit=2";

        Assert.Equal(0, Spec.Select(target.AsSpan(0, target.IndexOf('?', StringComparison.Ordinal)), null));
    }

    [Fact]
    public void Select_NoRoutes_MinusOne()
    {
        Assert.Equal(0, RouteSelector.Empty.Count);
        Assert.Equal(-1, RouteSelector.Empty.Select("/v1/messages", "gpt-4o"));
    }

    [Fact]
    public void Labels_NameOrIndex_Precomputed()
    {
        Assert.Equal(["0", "4o", "2"], Spec.Labels);
        Assert.Equal(["anthropic", "openai_4o", "embeddings"], Spec.Groups);
        Assert.Equal(3, Spec.Count);
        Assert.Same(Spec.Labels[0], Spec.Labels[0]);
    }

    [Fact]
    public void Select_AfterWarmUp_DoesNotAllocate()
    {
        Spec.Select("/v1/embeddings", "text-embedding-3-large");

        var before = GC.GetAllocatedBytesForCurrentThread();
        var sum = 0;
        for (var i = 0; i < 1000; i++)
        {
            sum += Spec.Select("/v1/embeddings", "text-embedding-3-large") + Spec.Select("/v1/chat/completions", "o1") + Spec.Select("/v1/messages", null);
        }
        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;

        Assert.Equal(1000 * (2 - 1 + 0), sum);
        Assert.Equal(0, allocated);
    }

    [Fact]
    public void Constructor_RouteWithNeitherPathNorModel_Throws() =>
        Assert.Throws<ArgumentException>(() => new RouteSelector([new RouteConfig { Group = "g" }]));

    [Fact]
    public void Constructor_InvalidGlob_Throws() =>
        Assert.Throws<ArgumentException>(() => new RouteSelector([new RouteConfig { Model = "gpt-[4]", Group = "g" }]));

    [Fact]
    public void Constructor_InvalidPath_Throws() =>
        Assert.Throws<ArgumentException>(() => new RouteSelector([new RouteConfig { Path = "v1", Group = "g" }]));

    [Theory]
    [InlineData("/v1/messages", null)]
    [InlineData("/", null)]
    [InlineData("v1", "must start with '/'")]
    [InlineData("", "must start with '/'")]
    [InlineData(null, "must start with '/'")]
    [InlineData("/v1?x", "'?' is not allowed")]
    [InlineData("/v1 x", "whitespace")]
    [InlineData("/v1\u0000", "control characters")]
    public void PathProblem_Path_Explained(string? path, string? expected)
    {
        var problem = RouteSelector.PathProblem(path);

        if (expected is null) Assert.Null(problem);
        else Assert.Contains(expected, problem, StringComparison.Ordinal);
    }
}
