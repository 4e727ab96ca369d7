using LLMProxy.Forwarding;
using Microsoft.AspNetCore.Http;

namespace LLMProxy.Tests.Forwarding;

public class FailureClassifierTests
{
    [Theory]
    [InlineData(413, "Request body too large.", 413, "request_too_large")]
    [InlineData(408, "Reading the request body timed out due to data arriving too slowly.", 408, "request_timeout")]
    [InlineData(400, "Bad chunk size data.", 400, "bad_request")]
    [InlineData(400, "Unexpected end of request content.", AttemptFailure.ClientClosedRequest, "upstream_unavailable")]
    public void ForBadBody_MapsKestrelVerdict(int kestrelStatus, string message, int status, string code)
    {
        var failure = FailureClassifier.ForBadBody(new DefaultHttpContext(), new BadHttpRequestException(message, kestrelStatus));

        Assert.True(failure.ClientSide);
        Assert.Equal(status, failure.Status);
        Assert.Equal(code, failure.Code);
    }

    [Fact]
    public void ForBadBody_ClientAlreadyGone_IsClientClosed()
    {
        using var aborted = new CancellationTokenSource();
        aborted.Cancel();
        var context = new DefaultHttpContext { RequestAborted = aborted.Token };

        var failure = FailureClassifier.ForBadBody(context, new BadHttpRequestException("Request body too large.", 413));

        Assert.Equal(AttemptFailure.ClientClosedRequest, failure.Status);
    }

    [Fact]
    public void Upstream_TimeoutIs504_OthersAre502()
    {
        Assert.Equal((504, "upstream_timeout"), (AttemptFailure.Upstream(LLMProxy.Observability.AttemptError.Timeout).Status,
            AttemptFailure.Upstream(LLMProxy.Observability.AttemptError.Timeout).Code));
        foreach (var kind in new[] { LLMProxy.Observability.AttemptError.Connect, LLMProxy.Observability.AttemptError.Reset, LLMProxy.Observability.AttemptError.Protocol })
        {
            Assert.Equal(502, AttemptFailure.Upstream(kind).Status);
        }
    }
}
