// TEMPORARY: signatures of components being written on other branches; deleted when they merge.
using System.Net;
using LLMProxy.Configuration;
namespace LLMProxy.Configuration
{
    public static class ConfigLoader
    {
        public static ConfigLoadResult LoadFile(string path, Func<string, string?>? env = null) => throw new NotImplementedException();
        public static ConfigLoadResult LoadYaml(string yaml, Func<string, string?>? env = null) => throw new NotImplementedException();
    }
    public static class ConfigSummary { public static string Summarize(ProxyConfig c) => ""; }
}
namespace LLMProxy.Mock
{
    public sealed record MockOptions
    {
        public string Address { get; init; } = "127.0.0.1";
        public int Port { get; init; } = 8080;
        public int LatencyMs { get; init; }
        public int Status { get; init; } = 200;
        public double FailRate { get; init; }
        public int Chunks { get; init; } = 10;
        public int ChunkIntervalMs { get; init; } = 20;
        public string Name { get; init; } = "mock";
    }
    public sealed class MockServer : IAsyncDisposable
    {
        public static Task<MockServer> StartAsync(MockOptions options, Microsoft.Extensions.Logging.ILoggerFactory? loggerFactory = null, CancellationToken ct = default) => throw new NotImplementedException();
        public int Port { get; }
        public Uri BaseUrl { get; } = new("http://127.0.0.1");
        public long RequestCount { get; }
        public Task StopAsync(CancellationToken ct = default) => Task.CompletedTask;
        public ValueTask DisposeAsync() => default;
    }
}
