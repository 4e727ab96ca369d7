using System.Runtime.CompilerServices;
using System.Text;

namespace LLMProxy.Forwarding;

/// <summary>
/// An upstream SSE body that tells the client when it breaks (SPEC §13.6). When a read from the upstream fails with
/// the client still there, the failed read yields one final event
/// <c>data: {"error":{…,"code":"upstream_broken_stream"}}</c> (after a blank line if the break cut an event short, so it
/// never merges into a half-sent one) and the next read rethrows the upstream's failure. YARP then reports the broken
/// response body and aborts the client connection, so the client sees the event and no terminating chunk — never a
/// fake <c>[DONE]</c>. Cancellation (the client left, or an activity timeout) is passed on as it is.
/// Replaces the upstream response's content in the transformer, because YARP reads the body from it after headers.
/// A chunk that arrived on a busy socket event thread continues from the thread pool (<see cref="ChunkRelief"/>).
/// </summary>
/// <param name="named">An Anthropic Messages stream: the notice is named <c>event: error</c>, as Anthropic names an error
/// in a stream — its SDKs read named events only, and would drop an unnamed one unread.</param>
internal sealed class HonestSseContent(HttpContent inner, Func<bool>? hop = null, bool named = false) : ReplacedContent(inner)
{
    private readonly Func<bool> _hop = hop ?? ChunkRelief.ShouldHop;

    private const string NoticeData =
        "data: {\"error\":{\"message\":\"The upstream connection broke before the answer was complete.\",\"type\":\"llmproxy_error\",\"code\":\"upstream_broken_stream\"}}\n\n";

    /// <summary>The final event, as sent.</summary>
    public static readonly byte[] Notice = Encoding.UTF8.GetBytes(NoticeData);

    /// <summary>The final event of an Anthropic Messages stream, as sent.</summary>
    public static readonly byte[] NamedNotice = Encoding.UTF8.GetBytes("event: error\n" + NoticeData);

    /// <summary>How long the notice is given to reach the socket before the connection is aborted.</summary>
    private static readonly TimeSpan NoticeGrace = TimeSpan.FromMilliseconds(100);

    protected override async Task<Stream> OpenAsync(HttpContent inner, CancellationToken cancellationToken) =>
        new NoticeStream(await inner.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false), _hop, named ? NamedNotice : Notice);

    /// <param name="hop">Asked after a read that had to wait: whether the chunk goes on from the thread pool
    /// (<see cref="ChunkRelief"/>).</param>
    /// <param name="notice">The final event (<see cref="Notice"/> or <see cref="NamedNotice"/>).</param>
    private sealed class NoticeStream(Stream inner, Func<bool> hop, byte[] notice) : ReadOnlyStream
    {
        private Exception? _broken;
        private int _noticeSent; // bytes of the notice (with its leading separator) already returned
        private byte[]? _pending;
        private byte _last1 = (byte)'\n', _last2 = (byte)'\n'; // the last two bytes passed on; "\n\n" = at an event boundary

        // Every chunk of a stream waits here once (the forwarder's zero-byte read): its state machine comes from a pool
        // rather than a new box per chunk (each read is awaited once, by the one copier).
        [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            if (_pending is not null)
            {
                return buffer.Length == 0 ? 0 : NextNoticeBytes(buffer.Span);
            }
            if (_broken is not null)
            {
                // The notice is written, but only into the server's output pipe: an abort right now would close the
                // socket before the sender hands it to the kernel. A short real-time grace (network time, not logic
                // time, hence the system clock) lets it go out; then the upstream's failure, so the forwarder aborts.
                try
                {
                    await Task.Delay(NoticeGrace, TimeProvider.System, cancellationToken).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    // The client left or the activity timeout fired: abort now.
                }
                System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(_broken);
            }
            int read;
            try
            {
                var reading = inner.ReadAsync(buffer, cancellationToken);
                var waited = !reading.IsCompleted;
                read = await reading.ConfigureAwait(false);
                if (waited && hop())
                {
                    // The chunk arrived on a busy socket event thread: its way on to the client starts on the pool.
                    await Task.Yield();
                }
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                _broken = e;
                var boundary = _last1 == '\n' && _last2 == '\n';
                _pending = boundary ? notice : [(byte)'\n', (byte)'\n', .. notice];
                // A zero-byte read (the forwarder waits for data with one before renting its buffer) answers "ready".
                return buffer.Length == 0 ? 0 : NextNoticeBytes(buffer.Span);
            }
            if (read >= 2)
            {
                _last2 = buffer.Span[read - 2];
                _last1 = buffer.Span[read - 1];
            }
            else if (read == 1)
            {
                _last2 = _last1;
                _last1 = buffer.Span[0];
            }
            return read;
        }

        private int NextNoticeBytes(Span<byte> destination)
        {
            var pending = _pending!;
            var n = Math.Min(destination.Length, pending.Length - _noticeSent);
            pending.AsSpan(_noticeSent, n).CopyTo(destination);
            _noticeSent += n;
            if (_noticeSent == pending.Length)
            {
                _pending = null;
            }
            return n;
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                inner.Dispose();
            }
            base.Dispose(disposing);
        }
    }
}
