using LLMProxy.Configuration;
using LLMProxy.Forwarding;
using LLMProxy.Observability;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;

namespace LLMProxy.Tests.Forwarding;

/// <summary>The stall watch on the client's response body, on fake time (the pipeline tests are in Reliability/StalledClientTests).</summary>
public class ClientStreamsTests
{
    /// <summary>Fake time that counts the timers created on it.</summary>
    private sealed class CountingTime : FakeTimeProvider
    {
        public int Timers;

        public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
        {
            Interlocked.Increment(ref Timers);
            return base.CreateTimer(callback, state, dueTime, period);
        }
    }

    private sealed class AbortFeature : IHttpRequestLifetimeFeature
    {
        public bool Aborted { get; private set; }
        public CancellationToken RequestAborted { get; set; }
        public void Abort() => Aborted = true;
    }

    /// <summary>The client's socket: a write completes at once, or stays pending until the test lets it finish.</summary>
    private sealed class ClientSocket : Stream
    {
        public TaskCompletionSource? Pending { get; set; }
        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) { }
        public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default) =>
            Pending is { } pending ? new ValueTask(pending.Task) : ValueTask.CompletedTask;
        public override Task FlushAsync(CancellationToken cancellationToken) => Pending?.Task ?? Task.CompletedTask;
    }

    private static (CountingStream Body, ClientSocket Socket, AbortFeature Abort, CountingTime Time) Create()
    {
        var time = new CountingTime();
        var forward = new ForwardConfig { Name = "fwd", Port = 1, DefaultGroup = "g", Timeout = new ServerTimeoutConfig { Write = 1000 } };
        var streams = new ClientStreams(forward, time, NullLogger.Instance, new ProxyMetrics(includeProcessMetrics: false));
        var abort = new AbortFeature();
        var context = new DefaultHttpContext();
        context.Features.Set<IHttpRequestLifetimeFeature>(abort);
        var socket = new ClientSocket();
        context.Response.Body = socket;
        return (streams.Wrap(context, "r1"), socket, abort, time);
    }

    [Fact]
    public async Task WriteAndFlush_CompletingAtOnce_ArmNoTimer()
    {
        var (body, _, abort, time) = Create();

        for (var i = 0; i < 100; i++)
        {
            await body.WriteAsync(new byte[64]);
            await body.FlushAsync();
        }
        time.Advance(TimeSpan.FromMinutes(10));

        Assert.Equal(0, time.Timers);
        Assert.False(abort.Aborted);
        Assert.Equal(6400, body.Written);
    }

    [Fact]
    public void PendingWrite_StillPendingAfterWriteTimeout_AbortsConnection()
    {
        var (body, socket, abort, time) = Create();
        socket.Pending = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);

        var write = body.WriteAsync(new byte[64]);
        time.Advance(TimeSpan.FromMilliseconds(999));
        Assert.False(abort.Aborted);
        time.Advance(TimeSpan.FromMilliseconds(1));

        Assert.True(abort.Aborted);
        Assert.False(write.IsCompleted);
        Assert.Equal(1, time.Timers);
    }

    [Fact]
    public async Task PendingFlush_CompletingBeforeWriteTimeout_NeverAborts()
    {
        var (body, socket, abort, time) = Create();

        for (var i = 0; i < 3; i++)
        {
            socket.Pending = new TaskCompletionSource();
            var flush = body.FlushAsync();
            time.Advance(TimeSpan.FromMilliseconds(900));
            socket.Pending.SetResult();
            await flush;
        }
        time.Advance(TimeSpan.FromMinutes(10));

        // Progress every 900 ms: each pending flush had its own timer, none ran out.
        Assert.False(abort.Aborted);
        Assert.Equal(3, time.Timers);
    }
}
