using static LLMProxy.Tests.Configuration.ConfigTestYaml;

namespace LLMProxy.Tests.Configuration;

/// <summary>(ext, §13.6) <c>httpServer.forwards[].debugHeaders</c>.</summary>
public class ConfigDebugHeadersTests
{
    private static string Forward(string line) => With(ForwardAnchor, "      " + line + "\n");

    [Fact]
    public void Load_Absent_On() => Assert.True(LoadValid(Valid).HttpServer.Forwards[0].DebugHeaders);

    [Theory]
    [InlineData("false", false)]
    [InlineData("False", false)]
    [InlineData("true", true)]
    public void Load_Boolean_Kept(string text, bool expected) =>
        Assert.Equal(expected, LoadValid(Forward($"debugHeaders: {text}")).HttpServer.Forwards[0].DebugHeaders);

    [Theory]
    [InlineData("yes")]
    [InlineData("0")]
    public void Load_NotABoolean_ErrorAtItsPath(string text) =>
        AssertSingleError(Load(Forward($"debugHeaders: {text}")), "httpServer.forwards[0].debugHeaders", "must be true or false");
}
