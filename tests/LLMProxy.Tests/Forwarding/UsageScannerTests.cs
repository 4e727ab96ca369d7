using System.Text;
using LLMProxy.Forwarding;

namespace LLMProxy.Tests.Forwarding;

public class UsageScannerTests
{
    private static TokenUsage ScanInPieces(string body, int pieceSize, bool lastUsageWins = false)
    {
        var scanner = new UsageScanner(lastUsageWins);
        var bytes = Encoding.UTF8.GetBytes(body);
        for (var i = 0; i < bytes.Length; i += pieceSize)
        {
            scanner.Scan(bytes.AsSpan(i, Math.Min(pieceSize, bytes.Length - i)));
        }
        return scanner.Usage;
    }

    /// <summary>A JSON answer counts only the keys after its last <c>"usage":</c> — whatever the model wrote before it (a
    /// tool_use input with usage-like keys, a whole usage object) is not the answer's usage — at every split; a stream
    /// keeps every key (its events each carry part of the usage).</summary>
    [Fact]
    public void Json_LastUsageObjectWins_AtEverySplit()
    {
        const string forged = """{"type":"message","content":[{"type":"tool_use","input":{"prompt_tokens":900000000000,"usage" : {"input_tokens":800000000000,"output_tokens":7},"note":"\"usage\": {\"output_tokens\": 999}","cache_read_input_tokens":5}}],"usage":{"input_tokens":25,"output_tokens":12}}""";
        for (var piece = 1; piece <= forged.Length; piece++)
        {
            var usage = ScanInPieces(forged, piece, lastUsageWins: true);
            Assert.True((25, 12, 0) == (usage.Prompt, usage.Completion, usage.Cached), $"piece {piece}: {usage}");
            Assert.True(usage.Found);
        }
        Assert.Equal(900_000_000_000 + 5, ScanInPieces(forged, 7).Prompt); // stream mode: every key counts
        // A usage key not followed by its colon is no key; a JSON answer without any usage object keeps what it has.
        Assert.Equal(3, ScanInPieces("""{"x":"usage","usage_note":1,"prompt_tokens":3}""", 4, lastUsageWins: true).Prompt);
        // The Responses API echoes the request's metadata after its usage: a client's "usage" string there wipes nothing.
        const string echoed = """{"object":"response","output":[],"usage":{"input_tokens":40,"output_tokens":9},"user":null,"metadata":{"usage" : "x","output_tokens":"99"}}""";
        for (var piece = 1; piece <= echoed.Length; piece++)
        {
            var usage = ScanInPieces(echoed, piece, lastUsageWins: true);
            Assert.True((40, 9) == (usage.Prompt, usage.Completion), $"piece {piece}: {usage}");
        }
    }

    public static TheoryData<string, string, long, long, long, long> Shapes => new()
    {
        {
            "chat json",
            """{"id":"x","choices":[],"usage":{"prompt_tokens":1234,"completion_tokens":56,"total_tokens":1290,"prompt_tokens_details":{"cached_tokens":1024,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":32,"audio_tokens":0}}}""",
            1234, 56, 1024, 32
        },
        {
            "chat sse usage chunk",
            "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n"
            + "data: {\"choices\":[],\"usage\":{\"prompt_tokens\": 20, \"completion_tokens\": 7, \"prompt_tokens_details\": {\"cached_tokens\": 4}, \"completion_tokens_details\": {\"reasoning_tokens\": 3}}}\n\ndata: [DONE]\n\n",
            20, 7, 4, 3
        },
        {
            "completions json",
            """{"object":"text_completion","choices":[{"text":"x"}],"usage":{"prompt_tokens":5,"completion_tokens":16,"total_tokens":21}}""",
            5, 16, 0, 0
        },
        {
            "embeddings json",
            """{"object":"list","data":[{"embedding":[0.1,-0.2]}],"usage":{"prompt_tokens":8,"total_tokens":8}}""",
            8, 0, 0, 0
        },
        {
            "responses json",
            """{"object":"response","max_output_tokens":1000,"usage":{"input_tokens":300,"input_tokens_details":{"cached_tokens":256},"output_tokens":90,"output_tokens_details":{"reasoning_tokens":64},"total_tokens":390}}""",
            300, 90, 256, 64
        },
        {
            "responses sse",
            "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"usage\":null}}\n\n"
            + "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi\"}\n\n"
            + "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":37,\"input_tokens_details\":{\"cached_tokens\":0},\"output_tokens\":11,\"output_tokens_details\":{\"reasoning_tokens\":0},\"total_tokens\":48}}}\n\n",
            37, 11, 0, 0
        },
        {
            "anthropic json",
            """{"type":"message","content":[{"type":"text","text":"Hi"}],"usage":{"input_tokens":25,"cache_creation_input_tokens":100,"cache_read_input_tokens":2000,"output_tokens":40}}""",
            2125, 40, 2000, 0
        },
        {
            "anthropic sse",
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":10,\"output_tokens\":1}}}\n\n"
            + "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"output_tokens\"}}\n\n"
            + "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":15}}\n\n"
            + "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
            35, 15, 10, 0
        },
    };

    [Theory]
    [MemberData(nameof(Shapes))]
    public void Scan_EveryShapeAtEverySplit_ReadsEachTypeOnce(string shape, string body, long prompt, long completion, long cached, long reasoning)
    {
        foreach (var piece in new[] { 1, 2, 3, 7, 13, 64, 65, 4096 })
        {
            var usage = ScanInPieces(body, piece);
            Assert.True(usage.Found, $"{shape} / {piece}");
            Assert.Equal(new TokenUsage(prompt, completion, cached, reasoning) { Found = true }, usage);
        }
    }

    [Fact]
    public void Scan_KeyInsideJsonString_NotCounted()
    {
        var usage = ScanInPieces("data: {\"choices\":[{\"delta\":{\"content\":\"\\\"prompt_tokens\\\": 99\"}}],\"usage\":null}\n\n", 4);
        Assert.False(usage.Found);
        Assert.Equal(0, usage.Prompt);
    }

    [Theory]
    [InlineData("""{"usage":{"prompt_tokens":99999999999999999999999,"completion_tokens":-5}}""")]
    [InlineData("""{"usage":{"prompt_tokens":1e9,"completion_tokens":2.5}}""")]
    [InlineData("""{"usage":{"prompt_tokens":"12","completion_tokens":null,"cached_tokens":[1]}}""")]
    [InlineData("""{"usage":{"prompt_tokens":1000000000001,"completion_tokens":9223372036854775807}}""")]
    public void Scan_GarbageNumbers_Ignored(string body)
    {
        var usage = ScanInPieces(body, 5);
        Assert.Equal(default, usage with { Found = false });
    }

    [Fact]
    public void Scan_LargestBelievedCounts_SumWithoutOverflow()
    {
        var max = UsageScanner.MaxCount;
        var usage = ScanInPieces($$$"""{"usage":{"input_tokens":{{{max}}},"cache_read_input_tokens":{{{max}}},"cache_creation_input_tokens":{{{max}}},"output_tokens":{{{max}}}}}""", 3);
        Assert.Equal(3 * max, usage.Prompt);
        Assert.Equal(4 * max, usage.Total);
    }

    [Fact]
    public void Scan_DeeplyNestedAndHuge_BoundedAndFound()
    {
        var scanner = new UsageScanner();
        var open = Encoding.ASCII.GetBytes(new string('[', 1 << 20));
        scanner.Scan(open);
        scanner.Scan("{\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}"u8);
        Assert.Equal(new TokenUsage(3, 4, 0, 0) { Found = true }, scanner.Usage);
    }

    [Fact]
    public void Scan_NoUsage_NothingFound()
    {
        var usage = ScanInPieces("data: {\"choices\":[{\"delta\":{\"content\":\"prompt_tokens\"}}],\"usage\":null}\n\n", 4);
        Assert.False(usage.Found);
    }
}
