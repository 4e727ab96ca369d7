using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Text;
using LLMProxy.Tests.Infrastructure;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;

namespace LLMProxy.Tests.Forwarding;

/// <summary><c>httpClient.proxy.url</c> with credentials, against a real forward proxy on loopback: the proxy gets
/// them as <c>Proxy-Authorization: Basic</c>, and nothing the proxy prints or answers ever shows the password.</summary>
public class OutboundProxyTests
{
    private const string User = "proxy-user";
    private const string Password = "p@ss:w0rd/SECRET-8c2f";
    // '@', ':' and '/' in a password must be percent-encoded in the url's user info.
    private const string EncodedPassword = "p%40ss%3Aw0rd%2FSECRET-8c2f";

    private static readonly string Basic = "Basic " + Convert.ToBase64String(Encoding.UTF8.GetBytes($"{User}:{Password}"));

    /// <summary>Every form the password could leak in.</summary>
    private static readonly string[] SecretForms = ["SECRET-8c2f", EncodedPassword, Basic[6..], "p@ss:w0rd"];

    private static string Config(string upstreamUrl, int proxyPort) => TestProxy.Config(
        $"- name: u1\n  url: \"{upstreamUrl}\"\n  auth:\n    type: bearer\n    token: upstream-key",
        "- name: u1",
        groupExtra: $"httpClient:\n  proxy:\n    url: \"http://{User}:{EncodedPassword}@127.0.0.1:{proxyPort}\"\n  timeout:\n    request: 5000");

    private static void AssertNoSecret(string where, string text)
    {
        foreach (var form in SecretForms)
        {
            Assert.False(text.Contains(form, StringComparison.Ordinal), $"{where} contains '{form}':\n{text}");
        }
    }

    [Fact]
    public async Task HttpClientProxyUrl_RequestsGoThroughTheConfiguredProxy()
    {
        // The "proxy" is a scripted server: an HTTP proxy receives the request in absolute form.
        await using var outbound = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("via-proxy"));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config(
            "- name: u1\n  url: \"http://upstream.invalid:8080\"", "- name: u1", groupExtra: $"""
            httpClient:
              keepalive: 0
              proxy:
                url: "{outbound.Url}"
            """));

        using var response = await proxy.Client.GetAsync("/v1/models");

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("via-proxy", response.UpstreamName());
        var got = Assert.Single(outbound.Received);
        Assert.Equal("/v1/models", got.Path);
        Assert.Equal("upstream.invalid:8080", got.Header("Host"));
    }

    [Fact]
    public async Task HttpUpstream_ForwardProxyGetsBasicCredentialsUpFront_EveryRequest_BodyIntact()
    {
        // A forward proxy as real ones behave: 407 with a Basic challenge unless the right credentials came along.
        var targets = new ConcurrentQueue<string>();
        await using var forwardProxy = await ScriptedUpstream.StartAsync(async ctx =>
        {
            targets.Enqueue(ctx.Features.Get<IHttpRequestFeature>()!.RawTarget);
            if (ctx.Request.Headers["Proxy-Authorization"] != Basic)
            {
                ctx.Response.StatusCode = StatusCodes.Status407ProxyAuthenticationRequired;
                ctx.Response.Headers["Proxy-Authenticate"] = "Basic realm=\"x\"";
                return;
            }
            await ScriptedUpstream.Json("via-proxy")(ctx);
        });
        // The upstream's name is never resolved: with a proxy, only the proxy's address is connected to.
        await using var proxy = await TestProxy.StartAsync(Config("http://llm.example:8080", forwardProxy.Port));

        for (var i = 0; i < 3; i++)
        {
            using var response = await proxy.Client.PostAsync("/v1/chat/completions", new StringContent($"{{\"n\":{i}}}", Encoding.UTF8, "application/json"));
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.Equal("via-proxy", response.UpstreamName());
        }

        // Sent up front, so no request met a 407 (a streamed body could not have been sent again after one).
        var received = forwardProxy.Received.ToList();
        Assert.Equal(3, received.Count);
        Assert.All(received, r => Assert.Equal(Basic, r.Header("Proxy-Authorization")));
        Assert.All(received, r => Assert.Equal("Bearer upstream-key", r.Header("Authorization")));
        Assert.All(targets, t => Assert.Equal("http://llm.example:8080/v1/chat/completions", t));
        Assert.Equal(["{\"n\":0}", "{\"n\":1}", "{\"n\":2}"], received.Select(r => Encoding.UTF8.GetString(r.Body)));
        AssertNoSecret("logs", proxy.Logs.AllText);
    }

    [Fact]
    public async Task HttpsUpstream_ConnectTunnel_AnswersBasicChallengeWithCredentials_NeverSendsThemToUpstream()
    {
        // An https upstream is reached through CONNECT, which .NET sends itself: first without credentials, then,
        // after the 407 challenge, with them. This proxy then refuses the tunnel, so the client gets a 502 whose
        // cause (an exception naming the proxy) must not show the password.
        await using var forwardProxy = RawForwardProxy.Start();
        await using var proxy = await TestProxy.StartAsync(Config("https://llm.example", forwardProxy.Port));

        using var response = await proxy.Client.PostAsync("/v1/chat/completions", new StringContent("{}", Encoding.UTF8, "application/json"));

        Assert.Equal(HttpStatusCode.BadGateway, response.StatusCode);
        var heads = forwardProxy.Heads.ToList();
        Assert.Equal(2, heads.Count);
        Assert.All(heads, h => Assert.StartsWith("CONNECT llm.example:443 HTTP/1.1\r\n", h, StringComparison.Ordinal));
        Assert.DoesNotContain("Proxy-Authorization", heads[0], StringComparison.OrdinalIgnoreCase);
        Assert.Contains($"Proxy-Authorization: {Basic}\r\n", heads[1], StringComparison.Ordinal);
        AssertNoSecret("502 body", await response.Content.ReadAsStringAsync());
        AssertNoSecret("logs", proxy.Logs.AllText);
    }

    [Fact]
    public async Task TestFlag_ProxyWithCredentials_SummaryShowsHostOnly()
    {
        var path = Path.Combine(Path.GetTempPath(), $"llmproxy-proxy-{Guid.NewGuid():N}.yaml");
        await File.WriteAllTextAsync(path, Config("https://llm.example", 3128));
        try
        {
            var (code, stdout, stderr) = await ProxyProcess.RunAsync("-t", "-c", path);

            Assert.Equal(0, code);
            Assert.Contains("via proxy http://127.0.0.1:3128", stdout, StringComparison.Ordinal);
            AssertNoSecret("-t output", stdout + stderr);
            Assert.DoesNotContain(User, stdout, StringComparison.Ordinal);
        }
        finally
        {
            File.Delete(path);
        }
    }

    /// <summary>A forward proxy on a raw socket (Kestrel does not accept CONNECT): records each request head,
    /// answers 407 + Basic challenge to a head without credentials and 403 to one with them.</summary>
    private sealed class RawForwardProxy : IAsyncDisposable
    {
        private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
        private readonly CancellationTokenSource _stop = new();
        private Task _accepting = Task.CompletedTask;

        public ConcurrentQueue<string> Heads { get; } = new();
        public int Port => ((IPEndPoint)_listener.LocalEndpoint).Port;

        public static RawForwardProxy Start()
        {
            var proxy = new RawForwardProxy();
            proxy._listener.Start();
            proxy._accepting = proxy.AcceptAsync();
            return proxy;
        }

        private async Task AcceptAsync()
        {
            try
            {
                while (true)
                {
                    var socket = await _listener.AcceptSocketAsync(_stop.Token);
                    _ = ServeAsync(socket);
                }
            }
            catch (OperationCanceledException)
            {
            }
        }

        private async Task ServeAsync(Socket socket)
        {
            using (socket)
            {
                var buffer = new byte[16 * 1024];
                var filled = 0;
                try
                {
                    while (true)
                    {
                        int end;
                        while ((end = buffer.AsSpan(0, filled).IndexOf("\r\n\r\n"u8)) < 0)
                        {
                            var read = await socket.ReceiveAsync(buffer.AsMemory(filled), _stop.Token);
                            if (read == 0) return;
                            filled += read;
                        }
                        var head = Encoding.ASCII.GetString(buffer, 0, end + 4);
                        Heads.Enqueue(head);
                        buffer.AsSpan(end + 4, filled - end - 4).CopyTo(buffer);
                        filled -= end + 4;
                        var answer = head.Contains("\r\nProxy-Authorization:", StringComparison.OrdinalIgnoreCase)
                            ? "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            : "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"x\"\r\nContent-Length: 0\r\n\r\n";
                        await socket.SendAsync(Encoding.ASCII.GetBytes(answer), _stop.Token);
                    }
                }
                catch (Exception ex) when (ex is OperationCanceledException or SocketException)
                {
                }
            }
        }

        public async ValueTask DisposeAsync()
        {
            await _stop.CancelAsync();
            _listener.Stop();
            await _accepting;
            _stop.Dispose();
        }
    }
}
