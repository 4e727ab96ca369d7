using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.InteropServices;

namespace LLMProxy.Tests.Infrastructure;

/// <summary>The real <c>llmproxy</c> binary as a child process, for exit codes, signals and startup lines.</summary>
public sealed partial class ProxyProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly ConcurrentQueue<string> _stdout = new();
    private readonly ConcurrentQueue<string> _stderr = new();
    private readonly SemaphoreSlim _lineArrived = new(0);

    private ProxyProcess(Process process)
    {
        _process = process;
    }

    public string Stdout => string.Join('\n', _stdout);
    public string Stderr => string.Join('\n', _stderr);
    public int Pid => _process.Id;
    public bool HasExited => _process.HasExited;

    public static string DllPath => Path.Combine(AppContext.BaseDirectory, "llmproxy.dll");

    public static ProxyProcess Start(params string[] args) => StartUnder([], args);

    /// <summary>Starts the binary through a launcher, e.g. <c>["prlimit", "--nofile=400:400"]</c>.</summary>
    public static ProxyProcess StartUnder(string[] launcher, params string[] args)
    {
        var psi = new ProcessStartInfo(launcher.Length > 0 ? launcher[0] : "dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in launcher.Skip(1).Concat(launcher.Length > 0 ? ["dotnet"] : []).Append(DllPath).Concat(args))
        {
            psi.ArgumentList.Add(a);
        }
        var process = new Process { StartInfo = psi, EnableRaisingEvents = true };
        var self = new ProxyProcess(process);
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) { self._stdout.Enqueue(e.Data); self._lineArrived.Release(); } };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) { self._stderr.Enqueue(e.Data); self._lineArrived.Release(); } };
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return self;
    }

    /// <summary>Runs to completion and returns the exit code.</summary>
    public static async Task<(int ExitCode, string Stdout, string Stderr)> RunAsync(params string[] args)
    {
        await using var p = Start(args);
        var code = await p.WaitForExitAsync(TimeSpan.FromSeconds(60));
        return (code, p.Stdout, p.Stderr);
    }

    public async Task<int> WaitForExitAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        await _process.WaitForExitAsync(cts.Token);
        _process.WaitForExit(); // drains the redirected output
        return _process.ExitCode;
    }

    /// <summary>Waits until <paramref name="count"/> stdout lines contain <paramref name="text"/>.</summary>
    public async Task WaitForOutputAsync(string text, int count = 1, TimeSpan? timeout = null)
    {
        var deadline = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(30));
        while (_stdout.Count(l => l.Contains(text, StringComparison.Ordinal)) < count)
        {
            if (_process.HasExited)
            {
                throw new InvalidOperationException($"llmproxy exited ({_process.ExitCode}) before printing '{text}'.\nstdout:\n{Stdout}\nstderr:\n{Stderr}");
            }
            var left = deadline - DateTime.UtcNow;
            if (left <= TimeSpan.Zero)
            {
                throw new TimeoutException($"'{text}' not printed.\nstdout:\n{Stdout}\nstderr:\n{Stderr}");
            }
            await _lineArrived.WaitAsync(left < TimeSpan.FromMilliseconds(200) ? left : TimeSpan.FromMilliseconds(200));
        }
    }

    public void Signal(int signal)
    {
        if (Kill(_process.Id, signal) != 0)
        {
            throw new InvalidOperationException($"kill({_process.Id}, {signal}) failed: {Marshal.GetLastPInvokeError()}");
        }
    }

    public const int SIGHUP = 1;
    public const int SIGINT = 2;
    public const int SIGTERM = 15;

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int Kill(int pid, int sig);

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            _process.Kill();
            await _process.WaitForExitAsync();
        }
        _process.Dispose();
    }
}
