using LLMProxy.Mock;

namespace LLMProxy.Cli;

/// <summary><c>llmproxy mock</c>: the built-in OpenAI-compatible upstream, until SIGTERM/SIGINT.</summary>
internal static class MockCommand
{
    public static async Task<int> RunAsync(MockOptions options, TextWriter stdout)
    {
        using var signal = new ShutdownSignal();
        await using var server = await MockServer.StartAsync(options).ConfigureAwait(false);
        stdout.WriteLine($"ready: mock upstream listening on {server.BaseUrl} (POST /v1/chat/completions, GET /v1/models)");
        await signal.Task.ConfigureAwait(false);
        await server.StopAsync().ConfigureAwait(false);
        return ExitCodes.Ok;
    }
}
