using System.Runtime.InteropServices;

namespace LLMProxy.Cli;

/// <summary>Completes on the first SIGTERM or SIGINT (the default handlers that kill the process are cancelled).</summary>
internal sealed class ShutdownSignal : IDisposable
{
    private readonly TaskCompletionSource<PosixSignal> _signalled = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly PosixSignalRegistration[] _registrations;

    public ShutdownSignal()
    {
        _registrations =
        [
            PosixSignalRegistration.Create(PosixSignal.SIGTERM, Handle),
            PosixSignalRegistration.Create(PosixSignal.SIGINT, Handle),
        ];
    }

    public Task<PosixSignal> Task => _signalled.Task;

    private void Handle(PosixSignalContext context)
    {
        context.Cancel = true;
        _signalled.TrySetResult(context.Signal);
    }

    public void Dispose()
    {
        foreach (var r in _registrations)
        {
            r.Dispose();
        }
    }
}
