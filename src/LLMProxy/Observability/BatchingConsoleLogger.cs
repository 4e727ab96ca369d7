using System.Buffers;
using System.Collections.Concurrent;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Logging;

namespace LLMProxy.Observability;

/// <summary>
/// Console logging that never makes a request wait or wake a thread: the calling thread formats its line
/// and adds it to a lock-free queue; a writer thread of its own wakes every 50 ms (or as soon as
/// <c>flushAtQueued</c> lines wait) and writes whatever has queued in as few writes as its buffer allows.
/// (Microsoft's console logger signals its writer thread per message and writes line by line, which on a busy
/// proxy costs a context switch and a syscall per request. A timer on the thread pool instead wakes a pool worker
/// per tick, and the woken workers spin looking for more work before they sleep again — measured as
/// <c>sched_yield</c> calls on the reference box; a dedicated thread in a timed wait does not.) Lines past
/// <c>maxQueued</c> are dropped and counted rather than growing memory without bound. Dispose writes every line
/// queued before it.
/// </summary>
internal sealed class BatchingConsoleLoggerProvider : ILoggerProvider
{
    private static readonly TimeSpan DefaultInterval = TimeSpan.FromMilliseconds(50);

    /// <summary>Set to <c>timer</c>, the writer runs on the thread pool off a periodic timer, as before (for A/B runs:
    /// bench/README.md); anything else, a dedicated thread.</summary>
    public const string FlushModeVariable = "LLMPROXY_LOG_FLUSH";

    private readonly ConcurrentQueue<Entry> _queue = new();
    private readonly TextWriter _output;
    private readonly bool _json;
    private readonly CancellationTokenSource _stop = new();
    // Spins not at all before blocking: the writer waits 50 ms at a time, a spin would only burn a core.
    private readonly ManualResetEventSlim _wake = new(false, spinCount: 0);
    private readonly Thread? _thread;
    private readonly Task? _timerLoop;
    private volatile bool _stopping;
    private int _queued;
    private long _dropped;

    private readonly int _maxQueued;
    private readonly int _flushAtQueued;
    private readonly TimeSpan _interval;
    private readonly TimeSpan _stopWait;

    /// <param name="stopWait">How long Dispose waits for the writer to finish, and a late line for the output, before
    /// giving up on them: an output blocked for good (a stalled pipe reader) must not keep the process from exiting.</param>
    public BatchingConsoleLoggerProvider(TextWriter output, bool json, int maxQueued = 200_000, TimeSpan? interval = null,
        int flushAtQueued = 4096, bool? dedicatedThread = null, TimeSpan? stopWait = null)
    {
        _output = output;
        _stopWait = stopWait ?? TimeSpan.FromSeconds(5);
        _json = json;
        _maxQueued = maxQueued;
        _flushAtQueued = flushAtQueued;
        _interval = interval ?? DefaultInterval;
        if (dedicatedThread ?? !string.Equals(Environment.GetEnvironmentVariable(FlushModeVariable), "timer", StringComparison.OrdinalIgnoreCase))
        {
            _thread = new Thread(WriteLoop) { IsBackground = true, Name = "LLMProxy log" };
            _thread.Start();
        }
        else
        {
            _timerLoop = Task.Run(TimerLoopAsync);
        }
    }

    public ILogger CreateLogger(string categoryName) => new BatchingLogger(this, categoryName);

    /// <summary>A queued line: its parts, written by the writer thread straight into the output (a plain-text line
    /// without an exception: the access line of every request, so no copy of it is made on the request path), or
    /// the whole line when it was formatted at once (JSON, an exception).</summary>
    private readonly record struct Entry(string? Line, DateTime Time, LogLevel Level, string? Category, int EventId, string? Message,
        AccessLine Access = default);

    // The writer's room for an access line's text (used under the drain lock); a longer line is formatted as a string.
    private readonly char[] _accessText = new char[1024];

    private void Enqueue(Entry line)
    {
        var queued = Interlocked.Increment(ref _queued);
        if (queued > _maxQueued)
        {
            Interlocked.Decrement(ref _queued);
            Interlocked.Increment(ref _dropped);
            return;
        }
        _queue.Enqueue(line);
        if (_stopping)
        {
            // Logged during or after Dispose (shutdown order is the host's): the writer is gone, write it here.
            // Checked after the enqueue, so a line is either seen by Dispose's last drain or drained by its logger.
            DrainBounded();
            return;
        }
        if (queued == _flushAtQueued && _thread is not null)
        {
            // A burst: write now rather than at the next tick (once per crossing, not per line).
            _wake.Set();
        }
    }

    private void WriteLoop()
    {
        while (!_stopping)
        {
            _wake.Wait(_interval);
            _wake.Reset();
            Drain();
        }
        Drain();
    }

    private async Task TimerLoopAsync()
    {
        using var timer = new PeriodicTimer(_interval);
        try
        {
            while (await timer.WaitForNextTickAsync(_stop.Token).ConfigureAwait(false))
            {
                Drain();
            }
        }
        catch (OperationCanceledException)
        {
        }
        Drain();
    }

    private readonly Lock _drainLock = new();

    /// <summary>Writes everything queued so far, now (e.g. before printing text that must follow the log lines).</summary>
    public void Flush() => Drain();

    private void Drain()
    {
        lock (_drainLock)
        {
            DrainLocked();
        }
    }

    /// <summary>Drains unless another drain holds the output longer than <see cref="_stopWait"/> (an output blocked for
    /// good): then the lines stay unwritten rather than the caller stuck — used once the writer is stopping.</summary>
    private void DrainBounded()
    {
        if (_drainLock.TryEnter(_stopWait))
        {
            try
            {
                DrainLocked();
            }
            finally
            {
                _drainLock.Exit();
            }
        }
    }

    private void DrainLocked()
    {
        if (_queue.IsEmpty && Interlocked.Read(ref _dropped) == 0)
        {
            return;
        }
        try
        {
            // Lines go into the writer's buffer; the flush at the end sends the batch in as few writes as
            // the buffer allows (no giant batch string: that would land on the large object heap).
            while (_queue.TryDequeue(out var entry))
            {
                Interlocked.Decrement(ref _queued);
                Write(entry);
            }
            var dropped = Interlocked.Exchange(ref _dropped, 0);
            if (dropped > 0)
            {
                _output.Write(Format(DateTimeOffset.UtcNow, LogLevel.Warning, "LLMProxy", new EventId(11, "LogLinesDropped"),
                    $"log output could not keep up: {dropped} line(s) dropped", null, null));
            }
            _output.Flush();
        }
        catch (IOException)
        {
            // stdout went away (closed pipe): keep serving; there is nowhere left to log to.
        }
    }

    /// <summary>Writes a queued line: as <see cref="Format"/> would have built it, without building it.</summary>
    private void Write(in Entry entry)
    {
        if (entry.Line is { } line)
        {
            _output.Write(line);
            return;
        }
        Span<char> head = stackalloc char[64];
        var at = WriteTimestamp(entry.Time, head);
        head[at++] = ' ';
        LevelName(entry.Level).CopyTo(head[at..]);
        at += 4;
        head[at++] = ':';
        head[at++] = ' ';
        _output.Write(head[..at]);
        _output.Write(entry.Category);
        head[0] = '[';
        entry.EventId.TryFormat(head[1..], out var digits, default, System.Globalization.CultureInfo.InvariantCulture);
        at = 1 + digits;
        head[at++] = ']';
        head[at++] = ' ';
        _output.Write(head[..at]);
        if (entry.Message is { } message)
        {
            _output.Write(LogText.Escape(message));
        }
        else if (entry.Access.TryFormat(_accessText, out var length) && _accessText.AsSpan(0, length).IndexOfAnyExcept(LogText.PrintableAscii) < 0)
        {
            _output.Write(_accessText.AsSpan(0, length));
        }
        else
        {
            _output.Write(LogText.Escape(entry.Access.ToString()));
        }
        _output.Write('\n');
    }

    private string Format(DateTimeOffset time, LogLevel level, string category, EventId id, string message, Exception? exception,
        IReadOnlyList<KeyValuePair<string, object?>>? state)
    {
        if (!_json)
        {
            // One entry is one line: whatever a message carries (a client's path, a config key) is escaped, and an
            // exception's lines are indented, so no text can start a line that looks like an entry of its own.
            // The line and its newline built at once: no second copy of every access line just to end it.
            return exception is null
                ? $"{Timestamp(time)} {LevelName(level)}: {category}[{id.Id}] {LogText.Escape(message)}\n"
                : $"{Timestamp(time)} {LevelName(level)}: {category}[{id.Id}] {LogText.Escape(message)}\n{Indented(exception.ToString())}\n";
        }
        var buffer = new ArrayBufferWriter<byte>(256);
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            json.WriteString("Timestamp", Timestamp(time));
            json.WriteNumber("EventId", id.Id);
            json.WriteString("LogLevel", level.ToString());
            json.WriteString("Category", category);
            json.WriteString("Message", message);
            if (exception is not null)
            {
                json.WriteString("Exception", exception.ToString());
            }
            if (state is { Count: > 1 })
            {
                json.WriteStartObject("State");
                foreach (var (key, value) in state)
                {
                    if (key == "{OriginalFormat}")
                    {
                        continue;
                    }
                    switch (value)
                    {
                        case null: json.WriteNull(key); break;
                        case int i: json.WriteNumber(key, i); break;
                        case long l: json.WriteNumber(key, l); break;
                        case double d: json.WriteNumber(key, d); break;
                        case bool b: json.WriteBoolean(key, b); break;
                        default: json.WriteString(key, Convert.ToString(value, System.Globalization.CultureInfo.InvariantCulture)); break;
                    }
                }
                json.WriteEndObject();
            }
            json.WriteEndObject();
        }
        return Encoding.UTF8.GetString(buffer.WrittenSpan) + "\n";
    }

    /// <summary>The second a line's timestamp was last formatted in, and its text up to the milliseconds.</summary>
    private sealed record SecondStamp(long Second, string Prefix);

    private static SecondStamp? s_stamp;

    /// <summary><paramref name="time"/> in UTC as <c>yyyy-MM-ddTHH:mm:ss.fffZ</c>. The date and time of day are formatted
    /// once per second (a custom DateTime format per access line showed in CPU profiles); the milliseconds are digits.</summary>
    internal static string Timestamp(DateTimeOffset time)
    {
        Span<char> text = stackalloc char[32];
        return new string(text[..WriteTimestamp(time.UtcDateTime, text)]);
    }

    /// <summary>Writes <see cref="Timestamp"/>'s text of <paramref name="utc"/> into <paramref name="span"/> (32 chars are
    /// enough); returns its length.</summary>
    private static int WriteTimestamp(DateTime utc, Span<char> span)
    {
        var second = utc.Ticks / TimeSpan.TicksPerSecond;
        var stamp = Volatile.Read(ref s_stamp);
        if (stamp is null || stamp.Second != second)
        {
            stamp = new SecondStamp(second, utc.ToString("yyyy-MM-ddTHH:mm:ss.", System.Globalization.CultureInfo.InvariantCulture));
            Volatile.Write(ref s_stamp, stamp);
        }
        stamp.Prefix.CopyTo(span);
        var at = stamp.Prefix.Length;
        var millisecond = utc.Millisecond;
        span[at] = (char)('0' + millisecond / 100);
        span[at + 1] = (char)('0' + millisecond / 10 % 10);
        span[at + 2] = (char)('0' + millisecond % 10);
        span[at + 3] = 'Z';
        return at + 4;
    }

    private static string Indented(string text)
    {
        var lines = text.ReplaceLineEndings("\n").Split('\n');
        return string.Join('\n', lines.Select(line => "    " + LogText.Escape(line)));
    }

    private static string LevelName(LogLevel level) => level switch
    {
        LogLevel.Trace => "trce",
        LogLevel.Debug => "dbug",
        LogLevel.Information => "info",
        LogLevel.Warning => "warn",
        LogLevel.Error => "fail",
        LogLevel.Critical => "crit",
        _ => "none",
    };

    public void Dispose()
    {
        _stopping = true;
        _stop.Cancel();
        _wake.Set();
        if (_thread is not null)
        {
            _thread.Join(_stopWait);
        }
        else
        {
            _timerLoop!.Wait(_stopWait);
        }
        // Whatever a logging thread queued while the writer stopped.
        DrainBounded();
        _stop.Dispose();
    }

    private sealed class BatchingLogger(BatchingConsoleLoggerProvider owner, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        // Levels are filtered by the LoggerFactory's rules before a message reaches us.
        public bool IsEnabled(LogLevel logLevel) => logLevel != LogLevel.None;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (!IsEnabled(logLevel))
            {
                return;
            }
            if (typeof(TState) == typeof(AccessLine) && !owner._json && exception is null)
            {
                // The access line of every request: queued as it is; its text is written by the writer, into the output.
                owner.Enqueue(new Entry(null, DateTime.UtcNow, logLevel, category, eventId.Id, null,
                    System.Runtime.CompilerServices.Unsafe.As<TState, AccessLine>(ref state)));
                return;
            }
            var message = formatter(state, exception);
            if (!owner._json && exception is null)
            {
                // Any other plain line: queued as parts, put together by the writer as it writes.
                owner.Enqueue(new Entry(null, DateTime.UtcNow, logLevel, category, eventId.Id, message));
                return;
            }
            owner.Enqueue(new Entry(owner.Format(DateTimeOffset.UtcNow, logLevel, category, eventId, message, exception,
                owner._json ? state as IReadOnlyList<KeyValuePair<string, object?>> : null), default, default, null, 0, null));
        }
    }
}
