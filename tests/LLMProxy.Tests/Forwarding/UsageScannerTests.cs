using System.Text;
using LLMProxy.Forwarding;

namespace LLMProxy.Tests.Forwarding;

public class UsageScannerTests
{
    private static UsageScanner ScanInPieces(string body, int pieceSize)
    {
        var scanner = new UsageScanner();
        var bytes = Encoding.UTF8.GetBytes(body);
        for (var i = 0; i < bytes.Length; i += pieceSize)
        {
            scanner.Scan(bytes.AsSpan(i, Math.Min(pieceSize, bytes.Length - i)));
        }
        return scanner;
    }

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(7)]
    [InlineData(4096)]
    public void OpenAiJson_AnySplit_ReadsUsageOnce(int pieceSize)
    {
        var scanner = ScanInPieces("{\"id\":\"x\",\"usage\":{\"prompt_tokens\":1234,\"completion_tokens\":56,\"total_tokens\":1290}}", pieceSize);
        Assert.Equal(1234, scanner.PromptTokens);
        Assert.Equal(56, scanner.CompletionTokens);
    }

    [Fact]
    public void AnthropicSse_CumulativeOutputTokens_TakesFinalValue()
    {
        var sse = "event: message_start\ndata: {\"message\":{\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n"
            + "event: message_delta\ndata: {\"delta\":{},\"usage\":{\"output_tokens\":15}}\n\n";
        var scanner = ScanInPieces(sse, 5);
        Assert.Equal(25, scanner.PromptTokens);
        Assert.Equal(15, scanner.CompletionTokens);
    }

    [Fact]
    public void NoUsage_NothingFound()
    {
        var scanner = ScanInPieces("data: {\"choices\":[{\"delta\":{\"content\":\"prompt_tokens\"}}],\"usage\":null}\n\n", 4);
        Assert.False(scanner.Found);
    }
}
