using LLMProxy.Forwarding;
using LLMProxy.Tests.Infrastructure;
using Microsoft.AspNetCore.Http;

namespace LLMProxy.Tests.Forwarding;

public class FailureClassifierTests
{
    [Theory]
    [InlineData(413, "Request body too large.", 413, "request_too_large")]
    [InlineData(408, "Reading the request body timed out due to data arriving too slowly.", 408, "request_timeout")]
    [InlineData(400, "Bad chunk size data.", 400, "bad_request")]
    [InlineData(400, "Unexpected end of request content.", Outcomes.ClientClosedRequest, null)]
    public void ForBadBody_MapsKestrelVerdict(int kestrelStatus, string message, int status, string? code)
    {
        var failure = FailureClassifier.ForBadBody(new DefaultHttpContext(), new BadHttpRequestException(message, kestrelStatus));

        Assert.True(failure.ClientSide);
        Assert.Equal(status, failure.Outcome.Info().Status);
        Assert.Equal(code, failure.Outcome.Info().Code);
    }

    [Fact]
    public void ForBadBody_ClientAlreadyGone_IsClientClosed()
    {
        using var aborted = new CancellationTokenSource();
        aborted.Cancel();
        var context = new DefaultHttpContext { RequestAborted = aborted.Token };

        var failure = FailureClassifier.ForBadBody(context, new BadHttpRequestException("Request body too large.", 413));

        Assert.Equal(RequestOutcome.ClientAborted, failure.Outcome);
    }

    /// <summary>The proxy's own shortage while opening an upstream socket is no verdict on the upstream (a connection
    /// flood must not open breakers) and no reason to fail over: 503 proxy_overloaded. A refused connect still is.</summary>
    [Theory]
    [InlineData(System.Net.Sockets.SocketError.TooManyOpenSockets, true, 503, "proxy_overloaded")]
    [InlineData(System.Net.Sockets.SocketError.NoBufferSpaceAvailable, true, 503, "proxy_overloaded")]
    [InlineData(System.Net.Sockets.SocketError.ConnectionRefused, false, 502, "upstream_unavailable")]
    [InlineData(System.Net.Sockets.SocketError.ConnectionReset, false, 502, "upstream_unavailable")]
    public void SocketErrorOnRequest_OwnShortageIsNoUpstreamVerdict(System.Net.Sockets.SocketError code, bool clientSide, int status, string errorCode)
    {
        var context = new DefaultHttpContext();
        context.Features.Set<Yarp.ReverseProxy.Forwarder.IForwarderErrorFeature>(ForwarderErrorFeature.ConnectFailed(code));

        var failure = FailureClassifier.Classify(context, Yarp.ReverseProxy.Forwarder.ForwarderError.Request);

        Assert.Equal(clientSide, failure.ClientSide);
        Assert.Equal((status, errorCode), (failure.Outcome.Info().Status, failure.Outcome.Info().Code));
    }

    [Fact]
    public void Upstream_TimeoutIs504_OthersAre502()
    {
        var timeout = AttemptFailure.Upstream(LLMProxy.Observability.AttemptError.Timeout).Outcome.Info();
        Assert.Equal((504, "upstream_timeout"), (timeout.Status, timeout.Code));
        foreach (var kind in new[] { LLMProxy.Observability.AttemptError.Connect, LLMProxy.Observability.AttemptError.Reset, LLMProxy.Observability.AttemptError.Protocol })
        {
            Assert.Equal(502, AttemptFailure.Upstream(kind).Outcome.Info().Status);
        }
    }
}
