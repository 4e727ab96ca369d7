using LLMProxy.Hosting;
using LLMProxy.Tests.Forwarding;
using LLMProxy.Tests.Infrastructure;

namespace LLMProxy.Tests.Hosting;

public class SocketTuningTests
{
    private static (IReadOnlyDictionary<string, string> Applied, Dictionary<string, string> Env) Apply(int cores, Dictionary<string, string>? env = null)
    {
        env ??= [];
        var applied = SocketTuning.Apply(cores, name => env.TryGetValue(name, out var v) ? v : null, (name, value) => env[name] = value);
        return (applied, env);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void Apply_TwoCoresOrFewer_OneEventThreadAndInlineCompletions(int cores)
    {
        var (applied, env) = Apply(cores);

        Assert.Equal("1", env[SocketTuning.ThreadCount]);
        Assert.Equal("1", env[SocketTuning.InlineCompletions]);
        Assert.Equal(2, applied.Count);
    }

    [Theory]
    [InlineData(3)]
    [InlineData(16)]
    public void Apply_MoreCores_LeavesTheRuntimesThreadCount(int cores)
    {
        var (_, env) = Apply(cores);

        Assert.False(env.ContainsKey(SocketTuning.ThreadCount));
        Assert.Equal("1", env[SocketTuning.InlineCompletions]);
    }

    [Fact]
    public void Apply_OperatorsOwnSettings_Win()
    {
        var (applied, env) = Apply(2, new Dictionary<string, string> { [SocketTuning.ThreadCount] = "2", [SocketTuning.InlineCompletions] = "0" });

        Assert.Empty(applied);
        Assert.Equal("2", env[SocketTuning.ThreadCount]);
        Assert.Equal("0", env[SocketTuning.InlineCompletions]);
    }

    /// <summary>The real binary: the setting made in Main takes effect (System.Net.Sockets reads it when the first socket
    /// is made), and an operator's environment variable wins.</summary>
    [Theory]
    [InlineData(null)]
    [InlineData("3")]
    public async Task RealBinary_SocketEventThreads_FollowTheRuleOrTheOperator(string? operatorSetting)
    {
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u1"));
        var port = StreamingAndErrorTests.FreePort();
        var admin = StreamingAndErrorTests.FreePort();
        var path = Path.Combine(Path.GetTempPath(), $"llmproxy-sockets-{Guid.NewGuid():N}.yaml");
        await File.WriteAllTextAsync(path, ProcessConfig.Minimal(port, admin, upstream.Url));
        try
        {
            string[] launcher = operatorSetting is null
                ? ["/usr/bin/env", $"-u{SocketTuning.ThreadCount}"]
                : ["/usr/bin/env", $"{SocketTuning.ThreadCount}={operatorSetting}"];
            await using var process = ProxyProcess.StartUnder(launcher, "-c", path, "--release");
            await process.WaitForOutputAsync("ready:", count: 2);
            using var client = new HttpClient();
            using var response = await client.PostAsync($"http://127.0.0.1:{port}/v1/chat/completions",
                new StringContent("""{"model":"m","messages":[]}""", System.Text.Encoding.UTF8, "application/json"));
            Assert.Equal(System.Net.HttpStatusCode.OK, response.StatusCode);

            var expected = operatorSetting is not null ? int.Parse(operatorSetting, System.Globalization.CultureInfo.InvariantCulture)
                : Environment.ProcessorCount <= SocketTuning.SingleEngineMaxCores ? 1 : Environment.ProcessorCount;
            var engines = Directory.GetDirectories($"/proc/{process.Pid}/task")
                .Count(task => File.ReadAllText(Path.Combine(task, "comm")).TrimEnd('\n') == ".NET Sockets");
            Assert.Equal(expected, engines);
        }
        finally
        {
            File.Delete(path);
        }
    }
}
