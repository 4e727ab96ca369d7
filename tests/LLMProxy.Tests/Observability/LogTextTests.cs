using LLMProxy.Observability;

namespace LLMProxy.Tests.Observability;

public class LogTextTests
{
    [Theory]
    [InlineData("/v1/chat/completions", "/v1/chat/completions")]
    [InlineData("a\r\nb\tc", "a\\r\\nb\\tc")]
    [InlineData("\0\x1b[31m\x7f", "\\x00\\x1b[31m\\x7f")]
    [InlineData("next\u0085line", "next\\x85line")]
    [InlineData("a\u2028b\u2029c", "a\\u2028b\\u2029c")]
    [InlineData("\u202eevil\u200b\ufeff", "\\u202eevil\\u200b\\ufeff")]
    [InlineData("模型 gpt-4o é 😀", "模型 gpt-4o é 😀")]
    [InlineData("back\\slash \"quote\"", "back\\slash \"quote\"")]
    public void Escape_Text_UnprintableEscapedPrintableKept(string text, string expected) =>
        Assert.Equal(expected, LogText.Escape(text));

    [Fact]
    public void Escape_LoneSurrogates_Escaped() =>
        // Built in code: a lone surrogate does not survive an attribute argument intact.
        Assert.Equal("lone\\ud800 \\udc00 pair 😀", LogText.Escape("lone" + '\ud800' + " " + '\udc00' + " pair 😀"));

    [Fact]
    public void Escape_AlreadyEscaped_Unchanged()
    {
        var once = LogText.Escape("a\r\n\u202e\x01\ud800");

        Assert.Equal(once, LogText.Escape(once));
    }

    [Fact]
    public void Escape_NothingToEscape_ReturnsSameInstance()
    {
        var text = "POST /v1/chat/completions 200 模型";

        Assert.Same(text, LogText.Escape(text));
    }
}
