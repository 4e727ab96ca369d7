using System.Collections.Concurrent;
using System.Diagnostics;
using LLMProxy.Mock;
using Microsoft.Extensions.Logging;

namespace LLMProxy.Tests.Mock;

internal static class MockTestSupport
{
    public static Task<MockServer> StartAsync(MockOptions? options = null, ILoggerFactory? loggerFactory = null) =>
        MockServer.StartAsync((options ?? new MockOptions()) with { Port = 0 }, loggerFactory);

    public static HttpClient Client(MockServer server) =>
        new() { BaseAddress = server.BaseUrl, Timeout = TimeSpan.FromSeconds(30) };

    public static HttpRequestMessage Chat(string body, string path = "/v1/chat/completions") =>
        new(HttpMethod.Post, path) { Content = new StringContent(body, System.Text.Encoding.UTF8, "application/json") };

    public static HttpRequestMessage StreamChat(string model = "gpt-test") =>
        Chat($$"""{"model":"{{model}}","stream":true,"messages":[{"role":"user","content":"hi"}]}""");

    /// <summary>Reads SSE <c>data:</c> payloads with the time each one arrived.</summary>
    public static async Task<List<(string Data, TimeSpan At)>> ReadEventsAsync(HttpResponseMessage response, Stopwatch clock,
        int? stopAfter = null)
    {
        var events = new List<(string, TimeSpan)>();
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        while (await reader.ReadLineAsync() is { } line)
        {
            if (!line.StartsWith("data: ", StringComparison.Ordinal))
                continue;
            events.Add((line["data: ".Length..], clock.Elapsed));
            if (events.Count == stopAfter)
                break;
        }
        return events;
    }
}

/// <summary>Hand-written logger factory that keeps every entry for assertions.</summary>
internal sealed class CapturingLoggerFactory : ILoggerFactory
{
    public ConcurrentQueue<(LogLevel Level, string Category, string Message, Exception? Exception)> Entries { get; } = new();

    public ILogger CreateLogger(string categoryName) => new Logger(this, categoryName);
    public void AddProvider(ILoggerProvider provider) { }
    public void Dispose() { }

    private sealed class Logger(CapturingLoggerFactory owner, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception,
            Func<TState, Exception?, string> formatter) =>
            owner.Entries.Enqueue((logLevel, category, formatter(state, exception), exception));
    }
}
