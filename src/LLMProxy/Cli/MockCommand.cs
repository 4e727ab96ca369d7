using LLMProxy.Mock;

namespace LLMProxy.Cli;

/// <summary><c>llmproxy mock</c>: the built-in OpenAI-compatible upstream, until SIGTERM/SIGINT.</summary>
internal static class MockCommand
{
    public static async Task<int> RunAsync(MockOptions options, TextWriter stdout, TextWriter stderr)
    {
        var problems = options.Validate();
        if (problems.Count > 0)
        {
            foreach (var p in problems)
            {
                stderr.WriteLine($"llmproxy mock: {p}");
            }
            return ExitCodes.Usage;
        }
        using var signal = new ShutdownSignal();
        MockServer server;
        try
        {
            server = await MockServer.StartAsync(options).ConfigureAwait(false);
        }
        // A port in use (IOException), an address this host does not have (SocketException), a privileged port
        // (UnauthorizedAccessException or SocketException): one line, exit 1, as the proxy's own listeners do.
        catch (Exception ex) when (ex is IOException or System.Net.Sockets.SocketException or UnauthorizedAccessException)
        {
            stderr.WriteLine($"llmproxy mock: cannot listen on {options.Address}:{options.Port}: {ex.Message}");
            return ExitCodes.ConfigOrStartup;
        }
        await using (server.ConfigureAwait(false))
        {
            stdout.WriteLine($"ready: mock upstream listening on {server.BaseUrl} (POST /v1/chat/completions, GET /v1/models)");
            await signal.Task.ConfigureAwait(false);
            await server.StopAsync().ConfigureAwait(false);
        }
        return ExitCodes.Ok;
    }
}
