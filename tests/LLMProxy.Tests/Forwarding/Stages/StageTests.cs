using System.Net;
using System.Text;
using System.Text.Json;
using LLMProxy.Configuration;
using LLMProxy.Forwarding;
using LLMProxy.Forwarding.Stages;
using LLMProxy.Observability;
using LLMProxy.Runtime;
using LLMProxy.Tests.Infrastructure;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;

namespace LLMProxy.Tests.Forwarding.Stages;

/// <summary>Each stage on its own, on a compiled runtime and a bare HttpContext with fake time: what it decides and
/// what it leaves for the next stage.</summary>
public sealed class StageTests : IDisposable
{
    private readonly FakeTimeProvider _time = new();
    private readonly CapturingLoggerProvider _logs = new();
    private readonly ProxyRuntime _runtime;

    public StageTests()
    {
        var yaml = TestProxy.Config("- name: u\n  url: \"http://127.0.0.1:1\"\n- name: v\n  url: \"http://127.0.0.1:2\"", "- name: u\n- name: v", groupExtra: "",
            forwardExtra: "ratelimit:\n  perSecond: 1\n  burst: 1\nmaxRequestBodySize: 100\ntrustedProxies: [\"10.0.0.0/8\"]");
        var loaded = ConfigLoader.LoadYaml(yaml);
        Assert.True(loaded.Success, string.Join("; ", loaded.Errors));
        _runtime = new ProxyRuntime(loaded.Config!, new ProxyMetrics(includeProcessMetrics: false), _time, _logs.CreateLogger("LLMProxy"));
    }

    private ForwardRuntime Forward => _runtime.Forwards[0];

    private RequestContext Request(string method = "POST", byte[]? body = null, long? contentLength = null, string peer = "127.0.0.1")
    {
        var http = new DefaultHttpContext();
        http.Request.Method = method;
        http.Request.Path = "/v1/chat/completions";
        http.Connection.RemoteIpAddress = IPAddress.Parse(peer);
        if (body is not null)
        {
            http.Request.Body = new MemoryStream(body);
            http.Request.ContentLength = contentLength ?? body.Length;
        }
        return new RequestContext(http, Forward, new PipelineServices(null!, _time, NullLogger.Instance), "rid", new CountingStream(Stream.Null));
    }

    [Fact]
    public void Composer_ForwardWithTrustedProxiesAndLimitAndRetries_HasEveryStageInOrder()
    {
        Assert.Collection(Forward.Stages,
            s => Assert.IsType<IdentifyClientStage>(s),
            s => Assert.IsType<AdmitClientStage>(s),
            s => Assert.IsType<ScreenStage>(s),
            s => Assert.IsType<ReadBodyStage>(s),
            s => Assert.IsType<ReadFactsStage>(s),
            s => Assert.IsType<AttemptStage>(s));
    }

    [Fact]
    public async Task IdentifyClient_TrustedPeer_ClientFromForwardedFor()
    {
        using var request = Request(peer: "10.1.2.3");
        request.Http.Request.Headers["X-Forwarded-For"] = "203.0.113.9";

        Assert.True(await new IdentifyClientStage(Forward.IpResolver!).RunAsync(request));
        Assert.Equal(IPAddress.Parse("203.0.113.9"), request.Client);
        Assert.Equal(IPAddress.Parse("10.1.2.3"), request.Peer);
    }

    [Fact]
    public async Task AdmitClient_OverBurst_StopsRateLimited_WithRetryAfter_ThenRefills()
    {
        var admit = Forward.Stages.OfType<AdmitClientStage>().Single();
        using var first = Request();
        using var second = Request();

        Assert.True(await admit.RunAsync(first));
        Assert.False(await admit.RunAsync(second));
        Assert.Equal(RequestOutcome.RateLimited, second.Outcome);
        Assert.True(second.RetryAfter > TimeSpan.Zero);

        _time.Advance(TimeSpan.FromSeconds(1));
        using var third = Request();
        Assert.True(await admit.RunAsync(third));
    }

    [Theory]
    [InlineData("TRACE", 0, RequestOutcome.MethodNotAllowed)]
    [InlineData("CONNECT", 0, RequestOutcome.MethodNotAllowed)]
    [InlineData("POST", 101, RequestOutcome.RequestTooLarge)]
    internal async Task Screen_Refuses(string method, long length, RequestOutcome expected)
    {
        using var request = Request(method, length > 0 ? new byte[length] : null);

        Assert.False(await new ScreenStage(100).RunAsync(request));
        Assert.Equal(expected, request.Outcome);
    }

    [Fact]
    public async Task Screen_FriendlyRequest_GoesOn()
    {
        using var request = Request("POST", new byte[100]);
        request.Http.Request.Headers["X-Note"] = "plain\tascii";

        Assert.True(await new ScreenStage(100).RunAsync(request));
        Assert.Equal(RequestOutcome.Ok, request.Outcome);
    }

    [Fact]
    public async Task ReadBody_WholeBody_BufferedOnce_Replayable()
    {
        var body = Encoding.UTF8.GetBytes("{\"model\":\"m\"}");
        using var request = Request(body: body);

        Assert.True(await ReadBodyStage.Instance.RunAsync(request));
        Assert.True(request.Replayable);
        Assert.Equal(body, request.Body.AsSpan(0, request.BodyLength).ToArray());
    }

    [Fact]
    public async Task ReadBody_EndsBeforeContentLength_ClientAborted()
    {
        using var request = Request(body: new byte[10], contentLength: 50);

        Assert.False(await ReadBodyStage.Instance.RunAsync(request));
        Assert.Equal(RequestOutcome.ClientAborted, request.Outcome);
        Assert.False(request.Replayable);
    }

    [Fact]
    public async Task ReadBody_NoBody_ReplayableWithoutBuffer()
    {
        using var request = Request("GET");

        Assert.True(await ReadBodyStage.Instance.RunAsync(request));
        Assert.True(request.Replayable);
        Assert.Null(request.Body);
    }

    [Fact]
    public async Task Outcomes_EveryProxyError_OneJsonBody_WithItsStatusAndCode()
    {
        foreach (var outcome in Enum.GetValues<RequestOutcome>())
        {
            var info = outcome.Info();
            if (!info.IsProxyError)
            {
                Assert.True(info.Status is 0 or Outcomes.ClientClosedRequest, outcome.ToString());
                continue;
            }
            var http = new DefaultHttpContext();
            var sink = new MemoryStream();
            http.Response.Body = sink;
            await ProxyErrors.WriteAsync(http, outcome, TimeSpan.FromMilliseconds(1500), "rid");

            Assert.True(info.Status >= 400, outcome.ToString());
            Assert.Equal(info.Status, http.Response.StatusCode);
            Assert.Equal("2", http.Response.Headers.RetryAfter.ToString());
            using var json = JsonDocument.Parse(sink.ToArray());
            Assert.Equal(info.Code, json.RootElement.GetProperty("error").GetProperty("code").GetString());
            Assert.Equal("llmproxy_error", json.RootElement.GetProperty("error").GetProperty("type").GetString());
            Assert.Equal(sink.Length, http.Response.ContentLength);
        }
    }

    /// <summary>The whole pipeline (ForwardHandler) with a forwarder whose every send fails to open a socket: the proxy's
    /// own shortage answers 503 proxy_overloaded at once, with no failover to the other member and no failure counted
    /// against either member (no breaker verdict); a refused connect is the upstream's, fails over and ends 502.</summary>
    [Theory]
    [InlineData(System.Net.Sockets.SocketError.TooManyOpenSockets, 1, 503, "proxy_overloaded", 0)]
    [InlineData(System.Net.Sockets.SocketError.ConnectionRefused, 2, 502, "upstream_unavailable", 2)]
    public async Task SocketCannotBeOpened_OwnShortage503_NoFailover_NoBreakerVerdict(System.Net.Sockets.SocketError code, int sends,
        int status, string errorCode, int failures)
    {
        var forwarder = new FailingForwarder(ForwarderErrorFeature.ConnectFailed(code));
        var (http, response) = await HandleAsync(forwarder);

        Assert.Equal(sends, forwarder.Sends);
        Assert.Equal(status, http.Response.StatusCode);
        using var json = JsonDocument.Parse(response.ToArray());
        Assert.Equal(errorCode, json.RootElement.GetProperty("error").GetProperty("code").GetString());
        Assert.Equal(status == 503 ? "1" : "", http.Response.Headers.RetryAfter.ToString());
        // The verdict a breaker would get is the error counted against the member.
        Assert.Equal(failures, MetricsText.Sum(await MetricsText.ExportAsync(_runtime.Metrics.Registry), "llmproxy_upstream_errors_total"));
    }

    /// <summary>A send that failed on something that is no evidence against the upstream is the client's request the
    /// proxy could not send: 400, one Warning naming the exception's type, and its stack trace at Debug only.</summary>
    [Fact]
    public async Task SendFailsOnASurprise_400_WarningNamesTheType_StackTraceAtDebugOnly()
    {
        var forwarder = new FailingForwarder(new ForwarderErrorFeature(new InvalidOperationException("cannot build the request: boom")));
        var (http, _) = await HandleAsync(forwarder);

        Assert.Equal(1, forwarder.Sends);
        Assert.Equal(400, http.Response.StatusCode);
        var warning = Assert.Single(_logs.Entries, e => e.Id.Name == "Unsendable");
        Assert.Equal(LogLevel.Warning, warning.Level);
        Assert.Contains("cause=InvalidOperationException", warning.Message);
        Assert.DoesNotContain("boom", warning.Message);
        var detail = Assert.Single(_logs.Entries, e => e.Id.Name == "UnsendableDetail");
        Assert.Equal(LogLevel.Debug, detail.Level);
        Assert.Contains("boom", detail.Message);
        Assert.Equal(0, MetricsText.Sum(await MetricsText.ExportAsync(_runtime.Metrics.Registry), "llmproxy_upstream_errors_total"));
    }

    private async Task<(HttpContext Http, MemoryStream Response)> HandleAsync(Yarp.ReverseProxy.Forwarder.IHttpForwarder forwarder)
    {
        var handler = new ForwardHandler(new RuntimeHolder(_runtime), 0, forwarder, _time, _logs.CreateLogger("LLMProxy.Access"));
        var http = new DefaultHttpContext();
        http.Request.Method = "POST";
        http.Request.Path = "/v1/chat/completions";
        http.Request.ContentType = "application/json";
        var body = Encoding.UTF8.GetBytes("{\"model\":\"m\"}");
        http.Request.Body = new MemoryStream(body);
        http.Request.ContentLength = body.Length;
        http.Connection.RemoteIpAddress = IPAddress.Loopback;
        var response = new MemoryStream();
        http.Response.Body = response;
        await handler.HandleAsync(http);
        return (http, response);
    }

    /// <summary>Fails every send, leaving <paramref name="error"/> as YARP leaves what it caught.</summary>
    private sealed class FailingForwarder(ForwarderErrorFeature error) : Yarp.ReverseProxy.Forwarder.IHttpForwarder
    {
        public int Sends { get; private set; }

        public ValueTask<Yarp.ReverseProxy.Forwarder.ForwarderError> SendAsync(HttpContext context, string destinationPrefix,
            HttpMessageInvoker httpClient, Yarp.ReverseProxy.Forwarder.ForwarderRequestConfig requestConfig,
            Yarp.ReverseProxy.Forwarder.HttpTransformer transformer)
        {
            Sends++;
            context.Features.Set<Yarp.ReverseProxy.Forwarder.IForwarderErrorFeature>(error);
            return new(Yarp.ReverseProxy.Forwarder.ForwarderError.Request);
        }
    }

    public void Dispose() => _runtime.Dispose();
}
