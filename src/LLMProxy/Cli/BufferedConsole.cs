using System.Text;

namespace LLMProxy.Cli;

/// <summary>
/// Replaces the autoflushing console writer with a buffered one flushed every 100 ms (and at exit):
/// one write syscall per batch of log lines instead of one per line, so access logging does not cost
/// a syscall per request. Installed before any logger captures Console.Out.
/// </summary>
internal static class BufferedConsole
{
    private static readonly TimeSpan Interval = TimeSpan.FromMilliseconds(100);
    private static TextWriter? _writer;
    private static Timer? _timer;

    public static void Install()
    {
        if (_writer is not null)
        {
            return;
        }
        var stream = Console.OpenStandardOutput();
        var writer = TextWriter.Synchronized(new StreamWriter(stream, new UTF8Encoding(false), 64 * 1024) { AutoFlush = false });
        Console.SetOut(writer);
        _writer = writer;
        _timer = new Timer(static _ => Flush(), null, Interval, Interval);
    }

    public static void Flush()
    {
        try
        {
            _writer?.Flush();
        }
        catch (IOException)
        {
            // stdout closed (e.g. a pipe reader went away): nothing sensible left to do with log lines.
        }
    }

    public static void Uninstall()
    {
        _timer?.Dispose();
        Flush();
    }
}
