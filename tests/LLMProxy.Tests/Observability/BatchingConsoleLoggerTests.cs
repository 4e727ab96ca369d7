using System.Text.Json;
using LLMProxy.Observability;
using Microsoft.Extensions.Logging;

namespace LLMProxy.Tests.Observability;

public class BatchingConsoleLoggerTests
{
    private static string Run(bool json, int lines, int maxQueued = 200_000, TimeSpan? interval = null)
    {
        var output = new StringWriter();
        var provider = new BatchingConsoleLoggerProvider(TextWriter.Synchronized(output), json, maxQueued, interval);
        var logger = provider.CreateLogger("LLMProxy.Access");
        for (var i = 0; i < lines; i++)
        {
            Log.Access(logger, "POST", "/v1/chat/completions", 200, "fwd", "u1", 1, 1.5, 42, "ok", $"req-{i}");
        }
        provider.Dispose(); // drains what is queued
        return output.ToString();
    }

    [Fact]
    public void Text_EveryLineWrittenInOrder_OnDispose()
    {
        var lines = Run(json: false, lines: 1000).Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(1000, lines.Length);
        for (var i = 0; i < lines.Length; i++)
        {
            Assert.EndsWith($"request_id=req-{i}", lines[i]);
            Assert.Contains("info: LLMProxy.Access[1] POST /v1/chat/completions 200", lines[i]);
        }
    }

    [Fact]
    public void Json_OneObjectPerLine_WithStateFields()
    {
        var lines = Run(json: true, lines: 10).Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(10, lines.Length);
        using var doc = JsonDocument.Parse(lines[3]);
        Assert.Equal("Information", doc.RootElement.GetProperty("LogLevel").GetString());
        Assert.Equal(1, doc.RootElement.GetProperty("EventId").GetInt32());
        var state = doc.RootElement.GetProperty("State");
        Assert.Equal(200, state.GetProperty("Status").GetInt32());
        Assert.Equal("req-3", state.GetProperty("RequestId").GetString());
    }

    [Fact]
    public void Overflow_DropsAndSaysHowMany_InsteadOfGrowing()
    {
        // Nothing is written before Dispose (hour-long interval), so exactly the first 100 lines fit.
        var text = Run(json: false, lines: 500, maxQueued: 100, interval: TimeSpan.FromHours(1));
        var lines = text.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(100, lines.Count(l => l.Contains("request_id=")));
        Assert.EndsWith("request_id=req-99", lines[99]);
        Assert.Contains("400 line(s) dropped", text);
    }
}
