using System.IO.Pipelines;
using LLMProxy.Configuration;
using LLMProxy.Observability;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Logging;
using Prometheus;

namespace LLMProxy.Forwarding;

/// <summary>
/// The client's side of one forward's requests: wraps the request body (stall timeout, size limit) and the response body
/// (stall timeout, byte count). Kestrel's minimum data rates average over the whole body, so on their own they let a client
/// that sent 100 KB fast and then stopped, or that stopped reading with megabytes buffered, hold its upstream request for
/// minutes; here a read or write that makes no progress for <c>timeout.read</c> / <c>timeout.write</c> ends it.
/// </summary>
internal sealed class ClientStreams
{
    private readonly ILogger _logger;
    private readonly string _forward;
    private readonly Counter.Child _readStalls;
    private readonly Counter.Child _writeStalls;

    public ClientStreams(ForwardConfig config, TimeProvider time, ILogger logger, ProxyMetrics metrics)
    {
        _forward = config.Name;
        _logger = logger;
        Time = time;
        ReadTimeout = TimeSpan.FromMilliseconds(config.Timeout.Read);
        WriteTimeout = TimeSpan.FromMilliseconds(config.Timeout.Write);
        MaxRequestBodySize = config.MaxRequestBodySize;
        _readStalls = metrics.ClientStalls.WithLabels(config.Name, "read");
        _writeStalls = metrics.ClientStalls.WithLabels(config.Name, "write");
    }

    public TimeProvider Time { get; }
    public TimeSpan ReadTimeout { get; }
    public TimeSpan WriteTimeout { get; }
    /// <summary>Enforced here rather than by Kestrel: a body Kestrel refused can no longer be drained after the 413,
    /// and a client still uploading would see its connection reset instead of reading the answer.</summary>
    public long MaxRequestBodySize { get; }

    /// <summary>Wraps the request body (when the request can have one) and the response body of <paramref name="context"/>.</summary>
    public CountingStream Wrap(HttpContext context, string requestId)
    {
        var request = context.Request;
        RequestBodyGuard? guard = null;
        if (context.Features.Get<IHttpRequestBodyDetectionFeature>()?.CanHaveBody ?? true)
        {
            // The reader is Kestrel's own as long as the body has not been replaced: it can cancel a pending read.
            request.Body = guard = new RequestBodyGuard(request.Body, request.BodyReader, context, this, requestId);
        }
        var counting = new CountingStream(context.Response.Body, context, this, requestId) { RequestBody = guard };
        context.Response.Body = counting;
        return counting;
    }

    internal void ReadStalled(string requestId, bool answered)
    {
        _readStalls.Inc();
        Log.ClientStoppedSending(_logger, _forward, (long)ReadTimeout.TotalMilliseconds, answered ? "answered 408" : "connection cut", requestId);
    }

    internal void WriteStalled(string requestId)
    {
        _writeStalls.Inc();
        Log.ClientStoppedReading(_logger, _forward, (long)WriteTimeout.TotalMilliseconds, requestId);
    }
}

/// <summary>A client stream that can be told its pending operation has made no progress for the whole timeout.</summary>
internal interface IStallable
{
    void OnStalled();
}

/// <summary>
/// One read or write that did not complete at once: a timer that calls <see cref="IStallable.OnStalled"/> unless the
/// operation completes first. Only such operations pay for a timer; one that completes at once allocates nothing.
/// </summary>
internal sealed class PendingOperation
{
    private static readonly TimerCallback Fire = static state => ((PendingOperation)state!).OnTimer();
    private readonly IStallable _stream;
    private readonly System.Threading.ITimer _timer;
    private int _done;

    public PendingOperation(IStallable stream, TimeProvider time, TimeSpan timeout)
    {
        _stream = stream;
        _timer = time.CreateTimer(Fire, this, timeout, Timeout.InfiniteTimeSpan);
    }

    /// <summary>The operation finished (either way): the timer no longer matters.</summary>
    public void Complete()
    {
        Volatile.Write(ref _done, 1);
        _timer.Dispose();
    }

    // A completion racing the timer may lose; the operation was then pending for the whole timeout anyway.
    private void OnTimer()
    {
        if (Volatile.Read(ref _done) == 0)
        {
            _stream.OnStalled();
        }
    }
}

/// <summary>
/// The client's request body: counts bytes against the body limit (413) and answers a read that gets no data for
/// <c>timeout.read</c> with 408 — by cancelling Kestrel's pending read — or cuts the connection when the response has
/// already started and no answer can be given.
/// </summary>
internal sealed class RequestBodyGuard(Stream inner, PipeReader reader, HttpContext context, ClientStreams owner, string requestId)
    : Stream, IStallable
{
    private long _read;

    /// <summary>The body bytes read from the client so far.</summary>
    public long BytesRead => _read;
    private int _stalled;
    private volatile bool _timedOut;
    private volatile bool _awaitingClient;

    /// <summary>A read is waiting for the client's next bytes (and did not complete): set while a read is pending, and
    /// left set when it ends in an exception, so a cancelled forward can tell whose slowness cancelled it.</summary>
    public bool AwaitingClient => _awaitingClient;

    public override bool CanRead => true;
    public override bool CanSeek => false;
    public override bool CanWrite => false;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

    public override void Flush()
    {
    }

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

    public override int Read(byte[] buffer, int offset, int count) => Count(inner.Read(buffer, offset, count));

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        if (_timedOut)
        {
            return ValueTask.FromException<int>(TimedOut());
        }
        var read = inner.ReadAsync(buffer, cancellationToken);
        if (read.IsCompletedSuccessfully)
        {
            var n = read.Result;
            return _read + n > owner.MaxRequestBodySize ? ValueTask.FromException<int>(TooLarge()) : new ValueTask<int>(Count(n));
        }
        return WatchAsync(read);
    }

    private async ValueTask<int> WatchAsync(ValueTask<int> read)
    {
        var pending = read.IsCompleted ? null : new PendingOperation(this, owner.Time, owner.ReadTimeout);
        _awaitingClient = pending is not null;
        int n;
        try
        {
            n = await read.ConfigureAwait(false);
            _awaitingClient = false;
        }
        catch (Exception ex) when (_timedOut && ex is OperationCanceledException or IOException)
        {
            throw TimedOut();
        }
        finally
        {
            pending?.Complete();
        }
        if (_timedOut)
        {
            // The read completed just as the timer cancelled it: the timeout stands.
            throw TimedOut();
        }
        return Count(n);
    }

    private int Count(int n)
    {
        _read += n;
        if (_read > owner.MaxRequestBodySize)
        {
            throw TooLarge();
        }
        return n;
    }

    void IStallable.OnStalled()
    {
        if (Interlocked.Exchange(ref _stalled, 1) != 0)
        {
            return;
        }
        var answerable = !context.Response.HasStarted;
        owner.ReadStalled(requestId, answerable);
        if (answerable)
        {
            // The pending read returns cancelled and surfaces as Kestrel's own 408 would: a BadHttpRequestException.
            _timedOut = true;
            reader.CancelPendingRead();
        }
        else
        {
            context.Abort();
        }
    }

    private BadHttpRequestException TimedOut() =>
        new($"No request body data arrived for {(long)owner.ReadTimeout.TotalMilliseconds} ms.", StatusCodes.Status408RequestTimeout);

    private BadHttpRequestException TooLarge() =>
        new($"The request body is larger than {owner.MaxRequestBodySize} bytes.", StatusCodes.Status413PayloadTooLarge);
}
