using System.Net;
using System.Net.Sockets;
using LLMProxy.Observability;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Server.Kestrel.Transport.Sockets;
using Microsoft.Extensions.Logging;
using Prometheus;

namespace LLMProxy.Hosting;

/// <summary>
/// Kestrel's socket transport with one change: when accept fails because the process is out of file descriptors
/// (EMFILE/ENFILE) or socket buffers, it pauses before accepting again. Kestrel's own listener retries at once, and since
/// the connection stays in the backlog the retry fails at once too: with the fd limit reached it burned more than a core
/// (1.15 cores measured) and the process then died with "Out of memory". The connections themselves are still made by
/// Kestrel's <see cref="SocketConnectionContextFactory"/> with the options <c>UseSockets</c> would use.
/// </summary>
internal sealed class PatientSocketTransport(SocketConnectionFactoryOptions options, ILoggerFactory loggerFactory, AcceptPauses pauses)
    : IConnectionListenerFactory
{
    /// <summary>Kestrel's default listen backlog.</summary>
    private const int Backlog = 512;

    public ValueTask<IConnectionListener> BindAsync(EndPoint endpoint, CancellationToken cancellationToken = default)
    {
        Socket socket;
        try
        {
            socket = SocketTransportOptions.CreateDefaultBoundListenSocket(endpoint);
        }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.AddressAlreadyInUse)
        {
            throw new AddressInUseException(e.Message, e);
        }
        socket.Listen(Backlog);
        var logger = loggerFactory.CreateLogger("Microsoft.AspNetCore.Server.Kestrel.Transport.Sockets");
        return new ValueTask<IConnectionListener>(new Listener(socket, new SocketConnectionContextFactory(options, logger), pauses));
    }

    private sealed class Listener(Socket socket, SocketConnectionContextFactory factory, AcceptPauses pauses) : IConnectionListener
    {
        private readonly CancellationTokenSource _closed = new();
        private readonly bool _tcp = socket.AddressFamily is AddressFamily.InterNetwork or AddressFamily.InterNetworkV6;

        public EndPoint EndPoint { get; } = socket.LocalEndPoint!;

        public async ValueTask<ConnectionContext?> AcceptAsync(CancellationToken cancellationToken = default)
        {
            while (true)
            {
                try
                {
                    var accepted = await socket.AcceptAsync(cancellationToken).ConfigureAwait(false);
                    if (_tcp)
                    {
                        accepted.NoDelay = true;
                    }
                    return factory.Create(accepted);
                }
                catch (ObjectDisposedException)
                {
                    return null; // unbound
                }
                catch (SocketException e) when (e.SocketErrorCode == SocketError.OperationAborted)
                {
                    return null; // unbound
                }
                catch (SocketException e) when (e.SocketErrorCode is SocketError.TooManyOpenSockets or SocketError.NoBufferSpaceAvailable)
                {
                    pauses.Record(e.SocketErrorCode);
                    try
                    {
                        // Real time: this waits for the kernel to have a descriptor again, not for the proxy's clock.
                        await Task.Delay(AcceptPauses.Pause, _closed.Token).ConfigureAwait(false);
                    }
                    catch (OperationCanceledException)
                    {
                        return null;
                    }
                }
                catch (SocketException)
                {
                    // Reset while waiting in the backlog (Kestrel does the same): take the next one.
                }
            }
        }

        public ValueTask UnbindAsync(CancellationToken cancellationToken = default)
        {
            _closed.Cancel();
            socket.Dispose();
            return default;
        }

        public ValueTask DisposeAsync()
        {
            _closed.Cancel();
            socket.Dispose();
            factory.Dispose();
            return default;
        }
    }
}

/// <summary>Accepts paused for want of a descriptor, in every listener of one proxy: counted, and logged at most every 10 s.</summary>
internal sealed class AcceptPauses(ProxyMetrics metrics, ILogger logger)
{
    public static readonly TimeSpan Pause = TimeSpan.FromMilliseconds(100);
    private readonly Counter _count = metrics.AcceptPauses;
    private readonly LogThrottle _throttle = new(TimeProvider.System, TimeSpan.FromSeconds(10));

    public void Record(SocketError error)
    {
        _count.Inc();
        if (_throttle.TryEnter(out var pauses))
        {
            Log.AcceptPaused(logger, error.ToString(), (long)Pause.TotalMilliseconds, pauses);
        }
    }
}
