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
            Log.Access(logger, "POST", "/v1/chat/completions", 200, "fwd", "u1", 1, 1.5, 42, "ok", $"req-{i}", "g", "m", "-");
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
    public void LoggedAfterDispose_StillWritten()
    {
        // Shutdown order is not ours: a request finishing (its access line) or a hosted service stopping may log
        // after the factory disposed this provider; the writer has stopped, so nothing else would ever drain it.
        var output = new StringWriter();
        var provider = new BatchingConsoleLoggerProvider(TextWriter.Synchronized(output), json: false, interval: TimeSpan.FromHours(1));
        var logger = provider.CreateLogger("LLMProxy.Access");
        provider.Dispose();

        Log.Access(logger, "POST", "/v1/chat/completions", 200, "fwd", "u1", 1, 1.5, 42, "ok", "req-late", "g", "m", "-");

        Assert.EndsWith("request_id=req-late\n", output.ToString());
    }

    [Fact]
    public async Task OutputBlockedForGood_DisposeAndLateLinesStillReturn()
    {
        // A stdout pipe whose reader stalled: the writer thread is stuck in a write. Shutdown must still end (the
        // lines are lost), and a line logged after Dispose must not hang the thread that logs it.
        using var stalled = new StalledWriter();
        var provider = new BatchingConsoleLoggerProvider(stalled, json: false, interval: TimeSpan.FromMilliseconds(5),
            dedicatedThread: true, stopWait: TimeSpan.FromMilliseconds(200));
        var logger = provider.CreateLogger("LLMProxy.Access");
        Log.Access(logger, "POST", "/v1/chat/completions", 200, "fwd", "u1", 1, 1.5, 42, "ok", "req-1", "g", "m", "-");
        await WaitUntilAsync(() => stalled.Blocked, TimeSpan.FromSeconds(30));

        // Guards against a hang only (a generous bound, not a speed threshold).
        await Task.Run(provider.Dispose).WaitAsync(TimeSpan.FromSeconds(60));
        await Task.Run(() => Log.Access(logger, "POST", "/v1/chat/completions", 200, "fwd", "u1", 1, 1.5, 42, "ok", "req-2", "g", "m", "-"))
            .WaitAsync(TimeSpan.FromSeconds(60));
    }

    /// <summary>A writer whose first write never returns until the test ends.</summary>
    private sealed class StalledWriter : TextWriter
    {
        private readonly ManualResetEventSlim _release = new(false);
        private volatile bool _blocked;

        public bool Blocked => _blocked;
        public override System.Text.Encoding Encoding => System.Text.Encoding.UTF8;

        public override void Write(char value) => Stall();
        public override void Write(string? value) => Stall();
        public override void Flush() => Stall();

        private void Stall()
        {
            _blocked = true;
            _release.Wait();
        }

        protected override void Dispose(bool disposing)
        {
            _release.Set();
            base.Dispose(disposing);
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

    [Fact]
    public async Task Running_LinesWrittenWithinTheInterval_WithoutDispose()
    {
        var output = new StringWriter();
        var synced = TextWriter.Synchronized(output);
        using var provider = new BatchingConsoleLoggerProvider(synced, json: false, interval: TimeSpan.FromMilliseconds(20));
        var logger = provider.CreateLogger("LLMProxy.Access");
        Log.Access(logger, "POST", "/v1/chat/completions", 200, "fwd", "u1", 1, 1.5, 42, "ok", "req-live", "g", "m", "-");

        await WaitUntilAsync(() => Written(synced, output).Contains("request_id=req-live", StringComparison.Ordinal), TimeSpan.FromSeconds(10));
    }

    [Fact]
    public async Task Burst_WrittenBeforeTheInterval_WhenFlushThresholdReached()
    {
        var output = new StringWriter();
        // An hour-long interval: only the threshold can make the writer write before Dispose.
        var synced = TextWriter.Synchronized(output);
        using var provider = new BatchingConsoleLoggerProvider(synced, json: false,
            interval: TimeSpan.FromHours(1), flushAtQueued: 50);
        var logger = provider.CreateLogger("LLMProxy.Access");
        for (var i = 0; i < 50; i++)
        {
            Log.Access(logger, "POST", "/v1/chat/completions", 200, "fwd", "u1", 1, 1.5, 42, "ok", $"req-{i}", "g", "m", "-");
        }

        await WaitUntilAsync(() => Written(synced, output).Contains("request_id=req-49", StringComparison.Ordinal), TimeSpan.FromSeconds(10));
    }

    /// <summary>What the writer has written so far, read under the lock its synchronized wrapper writes under: a
    /// StringWriter read while the logger's thread writes to it can throw.</summary>
    private static string Written(TextWriter synced, StringWriter output)
    {
        lock (synced)
        {
            return output.ToString();
        }
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task Dispose_AfterConcurrentLogging_EveryLineWrittenOnce(bool dedicatedThread)
    {
        var output = new StringWriter();
        var provider = new BatchingConsoleLoggerProvider(TextWriter.Synchronized(output), json: false,
            interval: TimeSpan.FromMilliseconds(5), dedicatedThread: dedicatedThread);
        var logger = provider.CreateLogger("LLMProxy.Access");
        const int Threads = 4, PerThread = 2000;
        using var started = new CountdownEvent(Threads);
        var writers = Enumerable.Range(0, Threads).Select(t => Task.Run(() =>
        {
            started.Signal();
            for (var i = 0; i < PerThread; i++)
            {
                Log.Access(logger, "POST", "/p", 200, "fwd", "u1", 1, 1.5, 42, "ok", $"t{t}-{i}", "g", "m", "-");
            }
        })).ToArray();
        started.Wait();
        await Task.WhenAll(writers);
        provider.Dispose();

        var lines = output.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(Threads * PerThread, lines.Length);
        Assert.Equal(Threads * PerThread, lines.Distinct().Count());
    }

    [Theory]
    [InlineData("2026-11-30T13:05:11.0000000+00:00")]
    [InlineData("2026-11-30T13:05:11.0070000+00:00")]
    [InlineData("2026-11-30T13:05:11.0990000+00:00")]
    [InlineData("2026-11-30T13:05:11.9999999+00:00")]
    [InlineData("2026-11-30T13:05:12.5000000+00:00")]
    [InlineData("2026-11-30T14:05:12.5000000+01:00")]
    [InlineData("1999-12-31T23:59:59.9990000+00:00")]
    [InlineData("2000-01-01T00:00:00.0010000+00:00")]
    public void Timestamp_SameTextAsTheDateTimeFormat_InUtc(string iso)
    {
        var time = DateTimeOffset.Parse(iso, System.Globalization.CultureInfo.InvariantCulture);

        var expected = time.UtcDateTime.ToString("yyyy-MM-ddTHH:mm:ss.fffZ", System.Globalization.CultureInfo.InvariantCulture);
        Assert.Equal(expected, BatchingConsoleLoggerProvider.Timestamp(time));
        // Again: now from the cached second.
        Assert.Equal(expected, BatchingConsoleLoggerProvider.Timestamp(time));
    }

    private static string RunOne(bool json, Action<ILogger> log)
    {
        var output = new StringWriter();
        var provider = new BatchingConsoleLoggerProvider(TextWriter.Synchronized(output), json);
        log(provider.CreateLogger("LLMProxy.Access"));
        provider.Dispose();
        return output.ToString();
    }

    private const string ForgedPath = "/v1/x\r\n2099-01-01T00:00:00.000Z info: LLMProxy.Access[1] GET /forged 200\u2028\x1b[2J";

    [Fact]
    public void Text_ValuesWithLineBreaksAndControls_EscapedOnOneLine()
    {
        var text = RunOne(json: false, logger => Log.Access(logger, "GET", ForgedPath, 200, "fwd", "u1", 1, 1.5, 42, "ok", "id\u0085x", "g", "m", "-"));

        var line = Assert.Single(text.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains(" GET /v1/x\\r\\n2099-01-01T00:00:00.000Z info: LLMProxy.Access[1] GET /forged 200\\u2028\\x1b[2J 200 forward=fwd ", line, StringComparison.Ordinal);
        Assert.EndsWith("request_id=id\\x85x", line, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(20)]
    [InlineData(3000)] // longer than the writer's room for an access line: formatted as a string instead
    public void Text_AccessLine_ExactlyTheMessageEveryProviderSees(int pathLength)
    {
        // The writer formats the access line itself; its text is the message template's, as a formatter gives it to
        // any other provider (invariant culture, the duration with one decimal).
        var path = "/v1/" + new string('p', pathLength);
        var text = RunOne(json: false, logger => Log.Access(logger, "POST", path, 503, "fwd", "u1", 3, 1234.56, 9_876_543_210, "no_available_upstream", "req-9", "g", "gpt-4o", "bench"));

        var line = Assert.Single(text.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Matches(@"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z info: LLMProxy\.Access\[1\] ", line);
        Assert.EndsWith($" info: LLMProxy.Access[1] POST {path} 503 forward=fwd upstream=u1 attempts=3 duration_ms=1234.6 bytes=9876543210 "
            + "outcome=no_available_upstream group=g model=gpt-4o client=bench request_id=req-9", line, StringComparison.Ordinal);
        var captured = new LLMProxy.Tests.Infrastructure.CapturingLoggerProvider();
        Log.Access(captured.CreateLogger("LLMProxy.Access"), "POST", path, 503, "fwd", "u1", 3, 1234.56, 9_876_543_210, "no_available_upstream", "req-9", "g", "gpt-4o", "bench");
        Assert.EndsWith("] " + Assert.Single(captured.Entries).Message, line, StringComparison.Ordinal);
    }

    [Fact]
    public void Json_ValuesWithLineBreaksAndControls_OneObjectThatRoundTrips()
    {
        var text = RunOne(json: true, logger => Log.Access(logger, "GET", ForgedPath, 200, "fwd", "u1", 1, 1.5, 42, "ok", "id\u0085x", "g", "m", "-"));

        var line = Assert.Single(text.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.DoesNotMatch("[\\x00-\\x1f\\u0085\\u2028]", line);
        using var doc = JsonDocument.Parse(line);
        var state = doc.RootElement.GetProperty("State");
        Assert.Equal(ForgedPath, state.GetProperty("Path").GetString());
        Assert.Equal("id\u0085x", state.GetProperty("RequestId").GetString());
    }

    [Fact]
    public void Text_Exception_EveryLineAfterTheEntryIndented()
    {
        var error = new InvalidOperationException("bad\r\n2099-01-01T00:00:00.000Z info: forged\nmore");

        var text = RunOne(json: false, logger => Log.UnhandledRequestError(logger, error, "req-1"));

        var lines = text.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Contains("unexpected error while proxying request_id=req-1", lines[0], StringComparison.Ordinal);
        Assert.True(lines.Length >= 3, text);
        Assert.All(lines.Skip(1), l => Assert.StartsWith("    ", l, StringComparison.Ordinal));
        Assert.DoesNotContain('\r', text);
    }
}
