using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace LLMProxy.Tests.Infrastructure;

/// <summary>
/// A real <c>redis-server</c> for one test, on a free loopback port, without persistence (<c>--save '' --appendonly
/// no</c>), stopped by its PID. <see cref="Kill"/> and <see cref="StartAgainAsync"/> take it away and bring it back on
/// the same port, as an outage would.
/// </summary>
public sealed class RedisServer : IAsyncDisposable
{
    /// <summary>Set to 1 (as <c>.ci/run</c> does) to make a missing redis-server fail the Redis tests instead of skipping them.</summary>
    public const string RequireVariable = "LLMPROXY_REQUIRE_REDIS";

    private Process? _process;

    private RedisServer(int port) => Port = port;

    public int Port { get; }
    public string Url => $"redis://127.0.0.1:{Port}";
    public int Pid => _process?.Id ?? 0;

    /// <summary>The redis-server binary on this machine, or null.</summary>
    public static string? Binary { get; } = Find();

    private static string? Find()
    {
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Append("/usr/bin").Append("/usr/sbin").Append("/usr/local/bin"))
        {
            if (dir.Length > 0 && File.Exists(Path.Combine(dir, "redis-server")))
            {
                return Path.Combine(dir, "redis-server");
            }
        }
        return null;
    }

    public static async Task<RedisServer> StartAsync()
    {
        if (Binary is null)
        {
            throw new InvalidOperationException($"redis-server is not installed ({RequireVariable}=1 requires it): apt-get install -y --no-install-recommends redis-server");
        }
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        var server = new RedisServer(port);
        await server.StartAgainAsync();
        return server;
    }

    /// <summary>Starts (again) on <see cref="Port"/> and waits until it answers PING.</summary>
    public async Task StartAgainAsync()
    {
        var psi = new ProcessStartInfo(Binary!)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in new[] { "--port", Port.ToString(System.Globalization.CultureInfo.InvariantCulture), "--bind", "127.0.0.1",
                     "--save", "", "--appendonly", "no", "--daemonize", "no", "--protected-mode", "yes", "--loglevel", "warning" })
        {
            psi.ArgumentList.Add(a);
        }
        var process = Process.Start(psi)!;
        process.OutputDataReceived += (_, _) => { };
        process.ErrorDataReceived += (_, _) => { };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        _process = process;
        var clock = Stopwatch.StartNew();
        while (await CommandAsync("PING") != "+PONG")
        {
            if (process.HasExited || clock.Elapsed > TimeSpan.FromSeconds(10))
            {
                throw new InvalidOperationException($"redis-server on port {Port} did not start (exited: {process.HasExited})");
            }
            await Task.Delay(20);
        }
    }

    /// <summary>SIGKILL, as a crash would, and waits until the process is gone.</summary>
    public void Kill()
    {
        if (_process is { HasExited: false } p)
        {
            p.Kill();
            p.WaitForExit();
        }
    }

    /// <summary>Sends one inline command and returns the first line of its answer (null when nobody answers).</summary>
    public async Task<string?> CommandAsync(string command)
    {
        try
        {
            using var client = new TcpClient();
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(2));
            await client.ConnectAsync(IPAddress.Loopback, Port, cts.Token);
            var stream = client.GetStream();
            await stream.WriteAsync(Encoding.ASCII.GetBytes(command + "\r\n"), cts.Token);
            using var reader = new StreamReader(stream, Encoding.ASCII);
            return await reader.ReadLineAsync(cts.Token);
        }
        catch (Exception ex) when (ex is SocketException or IOException or OperationCanceledException)
        {
            return null;
        }
    }

    /// <summary>The one key matching <paramref name="pattern"/> (<c>KEYS</c>), or null when none (or not one) does:
    /// for keys whose name holds a hash, such as an upstream account's (<c>{prefix}up:{name}:{fingerprint}:cool</c>).</summary>
    public async Task<string?> KeyAsync(string pattern)
    {
        using var client = new TcpClient();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(2));
        await client.ConnectAsync(IPAddress.Loopback, Port, cts.Token);
        var stream = client.GetStream();
        await stream.WriteAsync(Encoding.ASCII.GetBytes("KEYS " + pattern + "\r\n"), cts.Token);
        using var reader = new StreamReader(stream, Encoding.ASCII);
        if (await reader.ReadLineAsync(cts.Token) != "*1")
        {
            return null;
        }
        _ = await reader.ReadLineAsync(cts.Token); // $length
        return await reader.ReadLineAsync(cts.Token);
    }

    public ValueTask DisposeAsync()
    {
        Kill();
        _process?.Dispose();
        return ValueTask.CompletedTask;
    }
}

/// <summary>A test that needs <c>redis-server</c>: skipped with the reason when it is not installed, unless
/// <c>LLMPROXY_REQUIRE_REDIS=1</c> (CI), where a missing server fails the test instead.</summary>
public sealed class RedisFactAttribute : FactAttribute
{
    public RedisFactAttribute()
    {
        if (RedisServer.Binary is null && Environment.GetEnvironmentVariable(RedisServer.RequireVariable) != "1")
        {
            Skip = "redis-server is not installed (apt-get install redis-server); set LLMPROXY_REQUIRE_REDIS=1 to fail instead of skipping";
        }
    }
}
