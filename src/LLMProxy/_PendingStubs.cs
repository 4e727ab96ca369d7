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
namespace LLMProxy.LoadBalancing
{
    internal interface ILoadBalancer { int Select(ReadOnlySpan<bool> eligible, ulong clientHash); }
    internal readonly record struct BalancerMember(string Name, int Weight);
    internal static class LoadBalancerFactory { public static ILoadBalancer Create(BalanceStrategy strategy, IReadOnlyList<BalancerMember> members, Random? random = null) => throw new NotImplementedException(); }
    internal static class ClientHash { public static ulong Of(IPAddress ip) => 0; }
}
namespace LLMProxy.Resilience
{
    internal enum CircuitState { Closed = 0, HalfOpen = 1, Open = 2 }
    internal sealed class CircuitBreaker(BreakerConfig options, TimeProvider time)
    {
        public CircuitState State { get; }
        public bool IsAvailable { get; }
        public bool TryAcquire() => true;
        public void RecordSuccess() { }
        public void RecordFailure() { }
        public void Release() { }
        public DateTimeOffset? RetryAt { get; }
        public event Action<CircuitState, CircuitState>? StateChanged;
        public override string ToString() => $"{options}{time}{StateChanged}";
    }
    internal sealed class CoolDown(TimeProvider time)
    {
        public bool IsCooling { get; }
        public DateTimeOffset? Until { get; }
        public void Park(TimeSpan duration) { }
        public override string ToString() => $"{time}";
    }
    internal static class RetryAfter
    {
        public static TimeSpan? Parse(System.Net.Http.Headers.HttpResponseHeaders headers, DateTimeOffset now) => null;
        public static TimeSpan CoolDownFor(TimeSpan? hint) => TimeSpan.Zero;
    }
}
namespace LLMProxy.RateLimiting
{
    internal sealed class TokenBucketLimiter(double tokensPerSecond, int burst, TimeProvider time)
    {
        public bool HasToken { get; }
        public bool TryTake(out TimeSpan retryAfter) { retryAfter = default; return true; }
        public override string ToString() => $"{tokensPerSecond}{burst}{time}";
    }
    internal sealed class ClientRateLimiter(RateLimitConfig options, TimeProvider time) : IDisposable
    {
        public bool TryAcquire(IPAddress client, out TimeSpan retryAfter) { retryAfter = default; return true; }
        public void Dispose() { }
        public override string ToString() => $"{options}{time}";
    }
    internal sealed class ClientIpResolver(IReadOnlyList<string> trustedProxyCidrs)
    {
        public IPAddress Resolve(IPAddress peer, string? xForwardedFor) => peer;
        public override string ToString() => $"{trustedProxyCidrs}";
    }
}
