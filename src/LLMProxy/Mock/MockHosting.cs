namespace LLMProxy.Mock;

/// <summary>Replaces ConsoleLifetime, which would register Ctrl-C/SIGTERM handlers and announce itself on the
/// console: the mock lives inside tests and the proxy process, whose owner decides when it stops.</summary>
internal sealed class NoopHostLifetime : IHostLifetime
{
    public Task WaitForStartAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}

/// <summary>Hands the mock host's log events to the caller's factory; the host's own filter (warning+) applies first.
/// The caller owns the factory, so disposing the provider leaves it alone.</summary>
internal sealed class ForwardingLoggerProvider(ILoggerFactory factory) : ILoggerProvider
{
    public ILogger CreateLogger(string categoryName) => factory.CreateLogger(categoryName);
    public void Dispose() { }
}
