using LLMProxy.Configuration;
using System.Runtime.InteropServices;
using LLMProxy.Hosting;

namespace LLMProxy.Cli;

/// <summary>The default command: load and validate the config, run the proxy until SIGTERM/SIGINT.</summary>
internal static class ServeCommand
{
    public static async Task<int> RunAsync(string configPath, bool json, bool release, bool testOnly, int? shutdownTimeoutMs,
        TextWriter stdout, TextWriter stderr)
    {
        var result = ConfigLoader.LoadFile(configPath);
        if (!result.Success)
        {
            stderr.WriteLine($"llmproxy: invalid configuration {configPath} ({result.Errors.Count} error(s)):");
            foreach (var error in result.Errors)
            {
                stderr.WriteLine($"  {error}");
            }
            return ExitCodes.ConfigOrStartup;
        }
        var config = result.Config!;
        if (testOnly)
        {
            stdout.WriteLine(ConfigSummary.Summarize(config));
            stdout.WriteLine($"configuration {configPath} is valid");
            return ExitCodes.Ok;
        }
        if (!release && !json)
        {
            stdout.WriteLine($"LLMProxy {VersionInfo.Version} — config {Path.GetFullPath(configPath)}");
        }
        var drain = TimeSpan.FromMilliseconds(shutdownTimeoutMs ?? config.HttpServer.ShutdownTimeout);
        // The provider is ours to dispose (the factory does not dispose a provider it was given): disposing it writes
        // the lines still queued, the last ones ("stopped") included, before the process exits.
        using var loggerFactory = LoggingSetup.Create(json, release, out var logOutput);
        using var flushedAtExit = logOutput;
        var options = new ProxyHostOptions { ReloadSource = () => ConfigLoader.LoadFile(configPath) };
        return await RunHostAsync(config, loggerFactory, options, drain, stderr, onStarted: null).ConfigureAwait(false);
    }

    /// <summary>Starts the proxy, waits for a shutdown signal, drains. Shared by serve and demo.</summary>
    public static async Task<int> RunHostAsync(ProxyConfig config, Microsoft.Extensions.Logging.ILoggerFactory loggerFactory,
        ProxyHostOptions options, TimeSpan drain, TextWriter stderr, Action<ProxyHost>? onStarted)
    {
        using var signal = new ShutdownSignal();
        // SIGHUP reloads the config file (the outcome is logged); the process keeps running either way. Registered before
        // the listeners start: a SIGHUP right after "ready" was logged must not meet the default action (terminate). One
        // that arrives while the host starts is kept and reloads once it has started.
        var hangups = new HangupRelay();
        using var hangup = PosixSignalRegistration.Create(PosixSignal.SIGHUP, context =>
        {
            context.Cancel = true;
            hangups.Raise();
        });
        ProxyHost host;
        try
        {
            host = await ProxyHost.StartAsync(config, loggerFactory, options).ConfigureAwait(false);
        }
        catch (ListenerBindException ex)
        {
            stderr.WriteLine($"llmproxy: {ex.Message}");
            return ExitCodes.ConfigOrStartup;
        }
        await using (host.ConfigureAwait(false))
        {
            hangups.Attach(() => host.Reload());
            onStarted?.Invoke(host);
            await signal.Task.ConfigureAwait(false);
            await host.StopAsync(drain).ConfigureAwait(false);
        }
        return ExitCodes.Ok;
    }

    /// <summary>Runs the host's reload per SIGHUP; one raised before the host is attached runs when it is.</summary>
    private sealed class HangupRelay
    {
        private readonly Lock _lock = new();
        private Action? _reload;
        private bool _pending;

        public void Raise()
        {
            Action? reload;
            lock (_lock)
            {
                reload = _reload;
                _pending = reload is null;
            }
            if (reload is not null)
            {
                _ = Task.Run(reload);
            }
        }

        public void Attach(Action reload)
        {
            lock (_lock)
            {
                _reload = reload;
                if (!_pending)
                {
                    return;
                }
                _pending = false;
            }
            _ = Task.Run(reload);
        }
    }
}
