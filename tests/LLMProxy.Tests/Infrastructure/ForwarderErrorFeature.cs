using Yarp.ReverseProxy.Forwarder;

namespace LLMProxy.Tests.Infrastructure;

/// <summary>What YARP's forwarder leaves on a context whose send failed: <see cref="ForwarderError.Request"/> and the
/// exception it caught (for <c>FailureClassifier</c> and the attempt stage without a real forwarder).</summary>
public sealed class ForwarderErrorFeature(Exception exception) : IForwarderErrorFeature
{
    public ForwarderError Error => ForwarderError.Request;
    public Exception? Exception => exception;

    /// <summary>As SocketsHttpHandler reports a socket it could not open or connect: an HttpRequestException around the
    /// SocketException.</summary>
    public static ForwarderErrorFeature ConnectFailed(System.Net.Sockets.SocketError code) =>
        new(new HttpRequestException(HttpRequestError.ConnectionError, "connect failed", new System.Net.Sockets.SocketException((int)code)));
}
