using LLMProxy.Observability;
using Microsoft.Extensions.Logging;

namespace LLMProxy.Cli;

internal static class LoggingSetup
{
    /// <summary>
    /// Console logging: one line per entry (one JSON object per line with --json), written in batches off
    /// the request path. Release mode logs Information and up; development mode adds the proxy's Debug
    /// detail. Framework chatter stays at Warning.
    /// </summary>
    /// <param name="output">The provider, for the caller to dispose after the factory's last use: disposing it writes what
    /// is still queued (the factory does not dispose a provider it was given).</param>
    public static ILoggerFactory Create(bool json, bool release, out BatchingConsoleLoggerProvider output)
    {
        // Our own buffered writer on stdout (Console.Out flushes on every write).
        var stdout = new StreamWriter(Console.OpenStandardOutput(), new System.Text.UTF8Encoding(false), 32 * 1024) { AutoFlush = false };
        return Create(stdout, json, release, out output);
    }

    /// <summary>The same logging on another writer (tests that measure the release build's request path).</summary>
    public static ILoggerFactory Create(TextWriter writer, bool json, bool release, out BatchingConsoleLoggerProvider output)
    {
        var provider = new BatchingConsoleLoggerProvider(writer, json);
        output = provider;
        return LoggerFactory.Create(b =>
        {
            b.SetMinimumLevel(release ? LogLevel.Information : LogLevel.Debug);
            b.AddFilter("Microsoft", LogLevel.Warning);
            b.AddFilter("System", LogLevel.Warning);
            b.AddFilter("Yarp", LogLevel.Warning);
            // YARP's forwarder logs every failed forward (ForwardingError) at Warning with the exception and its stack
            // trace: one per request while an upstream is down. The attempt stage reads the same error and logs it in one
            // line (attempt failed with its kind, unsendable with the exception's type, or short of descriptors), and the
            // access line follows; the forwarder's only other Warning is a client's bad Sec-WebSocket-Key. Its Errors
            // and above, and every other Yarp category's Warnings, still show.
            b.AddFilter("Yarp.ReverseProxy.Forwarder.HttpForwarder", LogLevel.Error);
            // A listener that cannot be bound makes the generic host log "Hosting failed to start" with the exception's
            // stack trace; the proxy reports it itself, one line on stderr naming the address (SPEC §1, §8). The host
            // runs no hosted services of ours, so its Errors carry nothing else.
            b.AddFilter("Microsoft.Extensions.Hosting", LogLevel.Critical);
            // Hosting opens a log scope per request whenever any level is enabled for it; we log our own
            // access line, so it gets none (saves an allocation per request).
            b.AddFilter("Microsoft.AspNetCore.Hosting.Diagnostics", LogLevel.None);
            b.AddProvider(provider);
        });
    }
}
