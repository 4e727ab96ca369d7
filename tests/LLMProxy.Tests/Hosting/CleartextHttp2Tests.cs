using System.Buffers;
using System.Net;
using System.Net.Sockets;
using System.Text;
using LLMProxy.Hosting;
using LLMProxy.Tests.Infrastructure;
using Microsoft.AspNetCore.Http;

namespace LLMProxy.Tests.Hosting;

/// <summary>SPEC §3.1: a forward serves HTTP/1.1 and h2c (HTTP/2 with prior knowledge) on one cleartext port, through
/// the whole pipeline; a connection that never decides is closed like an idle one.</summary>
public class CleartextHttp2Tests
{
    private const string Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    private const string Chat = """{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}""";

    private static HttpClient H2c(string baseUrl) => new(new SocketsHttpHandler())
    {
        BaseAddress = new Uri(baseUrl),
        DefaultRequestVersion = HttpVersion.Version20,
        DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact, // over http://: the preface, no upgrade
        Timeout = TimeSpan.FromSeconds(30),
    };

    /// <summary>A chat request; HTTP/2 unless <paramref name="http11"/> (a message made by hand does not take the client's
    /// default version).</summary>
    private static HttpRequestMessage Post(string body = Chat, string? key = null, bool http11 = false)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
        {
            Content = new StringContent(body, Encoding.UTF8, "application/json"),
            Version = http11 ? HttpVersion.Version11 : HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
        };
        if (key is not null)
        {
            request.Headers.Authorization = new("Bearer", key);
        }
        return request;
    }

    [Theory]
    [InlineData("", "Undecided")]
    [InlineData("P", "Undecided")]
    [InlineData("PRI * HTTP/2.0\r\n\r\nSM\r\n\r", "Undecided")]
    [InlineData("POST /v1/chat/completions HTTP/1.1\r\n", "Http1")]
    [InlineData("GET / HTTP/1.1\r\n\r\n", "Http1")]
    [InlineData("PRI * HTTP/1.1\r\n", "Http1")]
    [InlineData("\r\n", "Http1")]
    [InlineData(Preface, "Http2")]
    [InlineData(Preface + "\0\0\x12\x04", "Http2")]
    public void Classify_DecidesOnTheFirstDifferentByte_Http2OnlyOnTheWholePreface(string received, string expected)
    {
        Assert.Equal(expected, CleartextHttp2.Classify(new ReadOnlySequence<byte>(Encoding.Latin1.GetBytes(received))).ToString());
    }

    [Fact]
    public void Classify_PrefaceSplitAcrossSegments_IsHttp2()
    {
        var bytes = Encoding.ASCII.GetBytes(Preface + "rest");
        Assert.Equal(CleartextHttp2.Verdict.Http2, CleartextHttp2.Classify(Segments.Split(bytes, 3, 13)));
    }

    [Fact]
    public void ThisKestrel_CanBeToldToSpeakHttp2OnACleartextConnection()
    {
        // Fails first if an ASP.NET Core update drops the feature the switch relies on (h2c would be off, with a Warning).
        Assert.True(CleartextHttp2.Available);
    }

    [Fact]
    public async Task H2cAndHttp11_OnTheSamePort_BothForwarded_AsHttp_ToTheUpstream()
    {
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u"));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config($"- name: u\n  url: \"{upstream.Url}\"", "- name: u"));
        using var h2 = H2c(proxy.ForwardUrl());

        using (var response = await h2.SendAsync(Post()))
        {
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.Equal(HttpVersion.Version20, response.Version);
            Assert.Equal("u", response.Headers.GetValues("X-LLMProxy-Upstream").Single());
            Assert.True(response.Headers.Contains("X-Request-ID"));
        }
        using (var response = await proxy.Client.SendAsync(Post(http11: true)))
        {
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.Equal(HttpVersion.Version11, response.Version);
        }

        var received = upstream.Received.ToArray();
        Assert.Equal(2, received.Length);
        foreach (var request in received)
        {
            Assert.Equal(Chat, Encoding.UTF8.GetString(request.Body));
            Assert.Equal("http", request.Header("X-Forwarded-Proto")); // the client's :scheme cannot claim https
            Assert.Equal($"127.0.0.1:{upstream.Port}", request.Header("Host"));
            Assert.Equal("127.0.0.1", request.Header("X-Forwarded-For"));
        }
        Assert.Contains(proxy.Logs.Entries, e => e.Category == "LLMProxy.Access" && e.Message.StartsWith("POST /v1/chat/completions 200", StringComparison.Ordinal));
    }

    [Fact]
    public async Task H2c_Sse_EachEventReachesTheClient_BeforeTheUpstreamWritesTheNext()
    {
        var next = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        // The client must see event 1 while the upstream waits to send the rest.
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.SseThen("data: {\"n\":1}\n\n", next.Task, "data: {\"n\":2}\n\ndata: [DONE]\n\n"));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config($"- name: u\n  url: \"{upstream.Url}\"", "- name: u"));
        using var h2 = H2c(proxy.ForwardUrl());

        using var response = await h2.SendAsync(Post("""{"model":"m","stream":true,"stream_options":{"include_usage":false}}"""), HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpVersion.Version20, response.Version);
        var body = await response.Content.ReadAsStreamAsync();
        var text = new StringBuilder();
        var buffer = new byte[1024];
        while (!text.ToString().Contains("\"n\":1", StringComparison.Ordinal))
        {
            var n = await body.ReadAsync(buffer).AsTask().WaitAsync(TimeSpan.FromSeconds(10));
            Assert.NotEqual(0, n);
            text.Append(Encoding.UTF8.GetString(buffer, 0, n));
        }
        next.SetResult();
        text.Append(await new StreamReader(body).ReadToEndAsync().WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.Equal("data: {\"n\":1}\n\ndata: {\"n\":2}\n\ndata: [DONE]\n\n", text.ToString());
    }

    [Fact]
    public async Task H2c_UpstreamBreaksMidStream_OneErrorEvent_ThenTheStreamIsReset_NoCleanEnd()
    {
        var delivered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.SseThen("data: {\"n\":1}\n\n", delivered.Task));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config($"- name: u\n  url: \"{upstream.Url}\"", "- name: u"));
        using var h2 = H2c(proxy.ForwardUrl());

        using var response = await h2.SendAsync(Post("""{"model":"m","stream":true,"stream_options":{"include_usage":true}}"""), HttpCompletionOption.ResponseHeadersRead);
        var body = await response.Content.ReadAsStreamAsync();
        var text = new StringBuilder();
        var buffer = new byte[1024];
        var clean = true;
        try
        {
            int n;
            while ((n = await body.ReadAsync(buffer).AsTask().WaitAsync(TimeSpan.FromSeconds(10))) > 0)
            {
                text.Append(Encoding.UTF8.GetString(buffer, 0, n));
                if (text.ToString().Contains("\"n\":1", StringComparison.Ordinal))
                {
                    delivered.TrySetResult();
                }
            }
        }
        catch (HttpIOException)
        {
            clean = false; // RST_STREAM: HTTP/2's way of ending a response abruptly
        }
        Assert.False(clean, "an HTTP/2 client saw a clean end of a broken stream");
        Assert.StartsWith("data: {\"n\":1}\n\n", text.ToString(), StringComparison.Ordinal);
        Assert.Contains("upstream_broken_stream", text.ToString());
        Assert.DoesNotContain("[DONE]", text.ToString());
    }

    [Fact]
    public async Task H2c_ManyStreamsOnOneConnection_TwoClientKeys_EachRequestCarriesItsOwnKey()
    {
        const string keyA = "team-a-key-0123456789", keyB = "team-b-key-9876543210";
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u"));
        var keys = $"keys:\n  - name: team_a\n    key: \"{keyA}\"\n  - name: team_b\n    key: \"{keyB}\"";
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config($"- name: u\n  url: \"{upstream.Url}\"", "- name: u", forwardExtra: keys));
        using var h2 = H2c(proxy.ForwardUrl());

        // 60 requests at once on one HTTP/2 connection, keys interleaved, every tenth one wrong.
        var statuses = await Task.WhenAll(Enumerable.Range(0, 60).Select(async i =>
        {
            var key = i % 10 == 9 ? "wrong-key-000000000000" : i % 2 == 0 ? keyA : keyB;
            using var response = await h2.SendAsync(Post($$"""{"model":"m","user":"{{i}}"}""", key));
            Assert.Equal(HttpVersion.Version20, response.Version);
            return (i, (int)response.StatusCode);
        }));

        foreach (var (i, status) in statuses)
        {
            Assert.Equal(i % 10 == 9 ? 401 : 200, status);
        }
        var access = proxy.Logs.Entries.Where(e => e.Category == "LLMProxy.Access").Select(e => e.Message).ToArray();
        Assert.Equal(60, access.Length);
        var received = upstream.Received.ToArray();
        Assert.Equal(54, received.Length);
        foreach (var request in received)
        {
            // Which request this was (its body), and which client the access line named for it (its request id).
            var i = int.Parse(Encoding.UTF8.GetString(request.Body).Split('"')[^2]);
            var line = access.Single(l => l.Contains($"request_id={request.Header("X-Request-ID")}", StringComparison.Ordinal));
            Assert.Contains(i % 2 == 0 ? "client=team_a" : "client=team_b", line);
            Assert.Null(request.Header("Authorization")); // the client's key is never sent upstream
        }
        Assert.Equal(6, access.Count(l => l.Contains(" 401 ", StringComparison.Ordinal)));
    }

    [Fact]
    public async Task H2c_TeTrailers_NotSentUpstream_AdminSpeaksH2cToo()
    {
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u"));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config($"- name: u\n  url: \"{upstream.Url}\"", "- name: u"));
        using var h2 = H2c(proxy.ForwardUrl());

        // YARP keeps "TE: trailers" from an HTTP/2 client; TE is hop-by-hop (SPEC §3.5).
        using var request = Post();
        request.Headers.TryAddWithoutValidation("TE", "trailers");
        using (var response = await h2.SendAsync(request))
        {
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }
        Assert.Null(Assert.Single(upstream.Received).Header("TE"));

        using var admin = H2c($"http://127.0.0.1:{proxy.AdminPort}");
        using var ping = await admin.GetAsync("/ping");
        Assert.Equal(HttpVersion.Version20, ping.Version);
        Assert.Equal("success", await ping.Content.ReadAsStringAsync());
    }

    /// <summary>HTTP/2 flow control on one connection: a stream whose body the proxy does not read yet (it waits for its
    /// group's only upstream connection) must not stop another stream's upload. With Kestrel's default windows (768 KB
    /// per stream, 1 MB per connection) the waiting body took the connection's window, and the other upload, to a free
    /// group, was answered 408 after timeout.read as if its client had stalled.</summary>
    [Fact]
    public async Task H2c_AnUnreadBodyOnOneStream_DoesNotStallTheUploadsOfTheOthers()
    {
        var hang = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var upstream = await ScriptedUpstream.StartAsync(async ctx =>
        {
            if (ctx.Request.Path.StartsWithSegments("/hang"))
            {
                await hang.Task.WaitAsync(TimeSpan.FromSeconds(30));
            }
            await ScriptedUpstream.Json("u")(ctx);
        }, recordBody: true);
        var yaml = $"""
            httpServer:
              forwards:
                - name: fwd
                  port: 3000
                  address: "127.0.0.1"
                  defaultGroup: narrow
                  maxRequestBodySize: 20000000
                  timeout:
                    read: 3000
                  routes:
                    - path: /other
                      group: free
              admin:
                port: 9000
                address: "127.0.0.1"
            upstreams:
              - name: u
                url: "{upstream.Url}"
            upstreamGroups:
              - name: narrow
                upstreams:
                  - name: u
                httpClient:
                  connect:
                    maxPerHost: 1
              - name: free
                upstreams:
                  - name: u
            """;
        await using var proxy = await TestProxy.StartAsync(yaml);
        using var h2 = H2c(proxy.ForwardUrl());

        // 1: holds narrow's one upstream connection. 2: 5 MB (streamed, above the replay limit) queued behind it, unread.
        var holding = h2.SendAsync(new HttpRequestMessage(HttpMethod.Get, "/hang") { Version = HttpVersion.Version20, VersionPolicy = HttpVersionPolicy.RequestVersionExact });
        await Eventually.WaitUntilAsync(() => upstream.Count >= 1, TimeSpan.FromSeconds(10));
        var queued = h2.SendAsync(new HttpRequestMessage(HttpMethod.Post, "/v1/queued")
        {
            Version = HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
            Content = new ByteArrayContent(new byte[5_000_000]),
        });

        // 3: 1 MB to the free group, on the same connection, while 2 waits.
        using (var other = await h2.SendAsync(new HttpRequestMessage(HttpMethod.Post, "/other/v1/echo")
        {
            Version = HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
            Content = new ByteArrayContent(new byte[1_000_000]),
        }))
        {
            Assert.Equal(HttpStatusCode.OK, other.StatusCode);
        }

        hang.SetResult();
        using (var first = await holding)
        using (var second = await queued)
        {
            Assert.Equal(HttpStatusCode.OK, first.StatusCode);
            Assert.Equal(HttpStatusCode.OK, second.StatusCode);
        }
        Assert.Contains(upstream.Received, r => r.Path == "/v1/queued" && r.Body.Length == 5_000_000);
    }

    /// <summary>Kestrel restarts its keep-alive timer on every PING, so a client pinging within each idle period held an
    /// HTTP/2 connection for ever without a request. The forward closes it after timeout.idle with no request open; a
    /// stream longer than that still completes.</summary>
    [Fact]
    public async Task H2c_PingsAlone_DoNotKeepAConnectionPastTheIdleTimeout()
    {
        await using var upstream = await ScriptedUpstream.StartAsync(async ctx =>
        {
            ctx.Response.ContentType = "text/event-stream";
            for (var i = 0; i < 6; i++) // 3 s of events, longer than timeout.idle
            {
                await ctx.Response.WriteAsync($"data: {{\"n\":{i}}}\n\n");
                await ctx.Response.Body.FlushAsync();
                await Task.Delay(500);
            }
            await ctx.Response.WriteAsync("data: [DONE]\n\n");
        });
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config($"- name: u\n  url: \"{upstream.Url}\"", "- name: u",
            forwardExtra: "timeout:\n  idle: 2000"));
        using var h2 = new HttpClient(new SocketsHttpHandler
        {
            KeepAlivePingDelay = TimeSpan.FromSeconds(1), // a PING every second, more often than timeout.idle
            KeepAlivePingTimeout = TimeSpan.FromSeconds(5),
            KeepAlivePingPolicy = HttpKeepAlivePingPolicy.Always,
        })
        { BaseAddress = new Uri(proxy.ForwardUrl()) };

        using (var stream = await h2.SendAsync(Post("""{"model":"m","stream":true,"stream_options":{"include_usage":true}}""")))
        {
            Assert.Equal(HttpVersion.Version20, stream.Version);
            Assert.EndsWith("data: [DONE]\n\n", await stream.Content.ReadAsStringAsync());
        }

        // Then only PINGs: the connection is closed after timeout.idle all the same.
        await Eventually.WaitUntilAsync(async () => MetricsText.Sample(await proxy.Admin.GetStringAsync("/metrics"),
            "llmproxy_client_connections{forward=\"fwd\"}") == 0, TimeSpan.FromSeconds(15));
    }

    /// <summary>A request open on an HTTP/2 connection keeps it from being closed as idle: past timeout.idle with a
    /// stream still open, a second request goes on the same connection (one connection counted, not two).</summary>
    [Fact]
    public async Task H2c_AStreamStillOpen_KeepsTheConnectionPastTheIdleTimeout()
    {
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var upstream = await ScriptedUpstream.StartAsync(async ctx =>
        {
            if (ctx.Request.Path.StartsWithSegments("/v1/chat/completions"))
            {
                await ScriptedUpstream.SseThen("data: {\"n\":1}\n\n", release.Task, "data: [DONE]\n\n")(ctx);
                return;
            }
            await ScriptedUpstream.Json("u")(ctx);
        });
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config($"- name: u\n  url: \"{upstream.Url}\"", "- name: u",
            forwardExtra: "timeout:\n  idle: 500"));
        using var h2 = H2c(proxy.ForwardUrl());
        using var stream = await h2.SendAsync(Post("""{"model":"m","stream":true,"stream_options":{"include_usage":true}}"""),
            HttpCompletionOption.ResponseHeadersRead);

        await Task.Delay(1500); // three idle timeouts with the stream open: nothing to wait on but time
        using (var second = await h2.GetAsync("/v1/models"))
        {
            Assert.Equal(HttpVersion.Version20, second.Version);
        }
        Assert.Equal(1, MetricsText.Sample(await proxy.Admin.GetStringAsync("/metrics"), "llmproxy_client_connections{forward=\"fwd\"}"));

        release.SetResult();
        Assert.EndsWith("data: [DONE]\n\n", await stream.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task Http11_WhoseFirstPacketIsOneByte_IsServed()
    {
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u"));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config($"- name: u\n  url: \"{upstream.Url}\"", "- name: u"));
        using var socket = await ConnectAsync(proxy);
        var request = Encoding.ASCII.GetBytes($"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {Chat.Length}\r\n\r\n{Chat}");

        await socket.SendAsync(request.AsMemory(0, 1)); // "P": a prefix of the preface, so undecided
        await Task.Delay(100); // let it arrive alone
        await socket.SendAsync(request.AsMemory(1));

        var answer = await ReadHeadAsync(socket);
        Assert.StartsWith("HTTP/1.1 200", answer, StringComparison.Ordinal);
    }

    [Fact]
    public async Task PartialPreface_ThenNothing_ClosedAfterTheIdleTimeout()
    {
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u"));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config($"- name: u\n  url: \"{upstream.Url}\"", "- name: u",
            forwardExtra: "timeout:\n  idle: 1000"));
        using var stalled = await ConnectAsync(proxy);
        await stalled.SendAsync(Encoding.ASCII.GetBytes("PRI * HTTP/2.0\r\n")); // undecided: could still be HTTP/2
        using var silent = await ConnectAsync(proxy);

        // Both closed by the proxy (a read returns 0 or a reset), not held until the test gives up after 20 s.
        foreach (var socket in new[] { stalled, silent })
        {
            var closed = await ReadUntilClosedAsync(socket).WaitAsync(TimeSpan.FromSeconds(20));
            Assert.True(closed);
        }
        // The port still serves both protocols.
        using var h2 = H2c(proxy.ForwardUrl());
        using var response = await h2.SendAsync(Post());
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
    }

    /// <summary>The admin listener counts its open connections (the descriptor guard's admin room): one the h2c check
    /// closes as idle, before any HTTP ran on it, must be uncounted too, or 32 idle connections used the room up.</summary>
    [Fact]
    public async Task AdminConnectionsClosedAsIdle_BeforeAnyRequest_AreUncounted()
    {
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u"));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config($"- name: u\n  url: \"{upstream.Url}\"", "- name: u",
            adminExtra: "timeout:\n  idle: 500"));
        var sockets = new List<Socket>();
        for (var i = 0; i < 3; i++)
        {
            var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            await socket.ConnectAsync(new IPEndPoint(IPAddress.Loopback, proxy.AdminPort));
            sockets.Add(socket);
        }
        await Eventually.WaitUntilAsync(() => proxy.Host.AcceptGuard.AdminOpen == 3, TimeSpan.FromSeconds(10));

        foreach (var socket in sockets)
        {
            Assert.True(await ReadUntilClosedAsync(socket).WaitAsync(TimeSpan.FromSeconds(20)));
            socket.Dispose();
        }
        await Eventually.WaitUntilAsync(() => proxy.Host.AcceptGuard.AdminOpen == 0, TimeSpan.FromSeconds(10));
    }

    [Fact]
    public async Task PartialPreface_DoesNotHoldUpShutdown()
    {
        await using var upstream = await ScriptedUpstream.StartAsync(ScriptedUpstream.Json("u"));
        await using var proxy = await TestProxy.StartAsync(TestProxy.Config($"- name: u\n  url: \"{upstream.Url}\"", "- name: u"));
        using var stalled = await ConnectAsync(proxy);
        await stalled.SendAsync(Encoding.ASCII.GetBytes("PRI *"));
        using (var response = await proxy.Client.GetAsync("/v1/models"))
        {
            Assert.Equal(HttpStatusCode.OK, response.StatusCode); // the stalled connection has been accepted by now
        }

        // The drain allows 60 s; the undecided connection has no request in flight, so the stop must not wait for it.
        var stop = proxy.Host.StopAsync(TimeSpan.FromSeconds(60));
        var finished = await Task.WhenAny(stop, Task.Delay(TimeSpan.FromSeconds(20)));
        Assert.Same(stop, finished);
        Assert.True(await ReadUntilClosedAsync(stalled).WaitAsync(TimeSpan.FromSeconds(20)));
    }

    private static async Task<Socket> ConnectAsync(TestProxy proxy)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        await socket.ConnectAsync(new IPEndPoint(IPAddress.Loopback, new Uri(proxy.ForwardUrl()).Port));
        return socket;
    }

    private static async Task<string> ReadHeadAsync(Socket socket)
    {
        var text = new StringBuilder();
        var buffer = new byte[4096];
        while (!text.ToString().Contains("\r\n\r\n", StringComparison.Ordinal))
        {
            var n = await socket.ReceiveAsync(buffer.AsMemory()).AsTask().WaitAsync(TimeSpan.FromSeconds(10));
            if (n == 0)
            {
                break;
            }
            text.Append(Encoding.ASCII.GetString(buffer, 0, n));
        }
        return text.ToString();
    }

    /// <summary>True once the peer closed or reset the connection; anything it sends first is read and dropped.</summary>
    private static async Task<bool> ReadUntilClosedAsync(Socket socket)
    {
        var buffer = new byte[4096];
        try
        {
            while (await socket.ReceiveAsync(buffer.AsMemory()) > 0)
            {
            }
        }
        catch (SocketException)
        {
        }
        return true;
    }
}
