using System.Net;
using System.Net.Sockets;
using LLMProxy.Observability;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Server.Kestrel.Transport.Sockets;
using Microsoft.Extensions.Logging;
using Prometheus;

namespace LLMProxy.Hosting;

/// <summary>
/// Kestrel's socket transport with two changes, both about file descriptors:
/// <list type="bullet">
/// <item>a connection accepted while the process's descriptors are down to the reserve (<see cref="DescriptorCeiling"/>)
/// is closed at once, so the runtime, the admin listener and the upstream pools always find a descriptor;</item>
/// <item>when accept fails because the process is out of descriptors anyway (EMFILE/ENFILE) or of socket buffers, it
/// pauses before accepting again. Kestrel's own listener retries at once, and since the connection stays in the backlog
/// the retry fails at once too: with the fd limit reached it burned more than a core (1.15 cores measured).</item>
/// </list>
/// The connections themselves are still made by Kestrel's <see cref="SocketConnectionContextFactory"/> with the options
/// <c>UseSockets</c> would use.
/// </summary>
internal sealed class PatientSocketTransport(SocketConnectionFactoryOptions options, ILoggerFactory loggerFactory, AcceptGuard guard,
    ListenerKind kind) : IConnectionListenerFactory
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
        return new ValueTask<IConnectionListener>(new Listener(socket, new SocketConnectionContextFactory(options, logger), guard, kind));
    }

    private sealed class Listener(Socket socket, SocketConnectionContextFactory factory, AcceptGuard guard, ListenerKind kind) : IConnectionListener
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
                    if (guard.ShedIfCrowded(accepted, kind))
                    {
                        continue;
                    }
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
                    guard.Paused(e.SocketErrorCode);
                    try
                    {
                        // Real time: this waits for the kernel to have a descriptor again, not for the proxy's clock.
                        await Task.Delay(AcceptGuard.Pause, _closed.Token).ConfigureAwait(false);
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
