using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using LLMProxy.Mock;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using static LLMProxy.Tests.Mock.MockTestSupport;

namespace LLMProxy.Tests.Mock;

public sealed class MockServerTests
{
    [Fact]
    public async Task ChatCompletion_NonStream_ReturnsUsageAndEchoedModel()
    {
        await using var server = await StartAsync(new MockOptions { Chunks = 4, Name = "alpha" });
        using var client = Client(server);

        using var response = await client.SendAsync(Chat("""{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}"""));

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("application/json", response.Content.Headers.ContentType?.MediaType);
        Assert.Equal("alpha", Assert.Single(response.Headers.GetValues(MockHeaders.Name)));
        Assert.NotNull(response.Content.Headers.ContentLength);
        using var json = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        var root = json.RootElement;
        Assert.Equal("chat.completion", root.GetProperty("object").GetString());
        Assert.Equal("gpt-4o-mini", root.GetProperty("model").GetString());
        Assert.StartsWith("chatcmpl-", root.GetProperty("id").GetString());
        var choice = root.GetProperty("choices")[0];
        Assert.Equal("assistant", choice.GetProperty("message").GetProperty("role").GetString());
        Assert.Equal("This is a streamed", choice.GetProperty("message").GetProperty("content").GetString());
        Assert.Equal("stop", choice.GetProperty("finish_reason").GetString());
        var usage = root.GetProperty("usage");
        Assert.True(usage.GetProperty("prompt_tokens").GetInt32() > 0);
        Assert.Equal(4, usage.GetProperty("completion_tokens").GetInt32());
        Assert.Equal(usage.GetProperty("prompt_tokens").GetInt32() + 4, usage.GetProperty("total_tokens").GetInt32());
    }

    [Fact]
    public async Task ChatCompletion_Stream_YieldsChunksPlusTwoEventsEndingWithDone_NoUsageUnasked()
    {
        await using var server = await StartAsync(new MockOptions { Chunks = 6, ChunkIntervalMs = 1 });
        using var client = Client(server);

        using var response = await client.SendAsync(StreamChat("stream-model"), HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        var events = await ReadEventsAsync(response, Stopwatch.StartNew());

        Assert.Equal(6 + 2 + 1, events.Count); // role + 6 content + final, then [DONE]
        Assert.Equal("[DONE]", events[^1].Data);
        var chunks = events.SkipLast(1).Select(e => JsonDocument.Parse(e.Data).RootElement).ToList();
        Assert.All(chunks, c =>
        {
            Assert.Equal("chat.completion.chunk", c.GetProperty("object").GetString());
            Assert.Equal("stream-model", c.GetProperty("model").GetString());
        });
        Assert.Equal("assistant", chunks[0].GetProperty("choices")[0].GetProperty("delta").GetProperty("role").GetString());
        string text = string.Concat(chunks.Skip(1).SkipLast(1)
            .Select(c => c.GetProperty("choices")[0].GetProperty("delta").GetProperty("content").GetString()));
        Assert.Equal("This is a streamed answer from", text);
        var last = chunks[^1];
        Assert.Equal("stop", last.GetProperty("choices")[0].GetProperty("finish_reason").GetString());
        // As OpenAI: no usage unless the request set stream_options.include_usage (MockAccountTests).
        Assert.All(chunks, c => Assert.False(c.TryGetProperty("usage", out _)));
    }

    [Fact]
    public async Task ChatCompletion_Stream_EventsArriveSpreadOverTime()
    {
        const int chunks = 5, intervalMs = 100;
        await using var server = await StartAsync(new MockOptions { Chunks = chunks, ChunkIntervalMs = intervalMs });
        using var client = Client(server);

        var clock = Stopwatch.StartNew();
        using var response = await client.SendAsync(StreamChat(), HttpCompletionOption.ResponseHeadersRead);
        var events = await ReadEventsAsync(response, clock);

        Assert.Equal(chunks + 2 + 1, events.Count);
        // The server waits intervalMs before each content chunk, so if nothing is buffered the role chunk
        // reaches the client about chunks*intervalMs before the final one; half of that leaves room for jitter.
        var spread = events[^1].At - events[0].At;
        Assert.True(spread >= TimeSpan.FromMilliseconds(chunks * intervalMs / 2.0),
            $"events arrived within {spread.TotalMilliseconds} ms, expected spread over ~{chunks * intervalMs} ms");
        Assert.True(events[1].At - events[0].At >= TimeSpan.FromMilliseconds(intervalMs / 2.0),
            "the role chunk should arrive before the first content chunk is produced");
    }

    [Theory]
    [InlineData("/openai/deployments/gpt/chat/completions")]
    [InlineData("/chat/completions")]
    [InlineData("/v1/chat/completions?api-version=1")]
    public async Task ChatCompletion_AnyPathEndingInChatCompletions_IsAnswered(string path)
    {
        await using var server = await StartAsync();
        using var client = Client(server);

        using var response = await client.SendAsync(Chat("""{"model":"m1"}""", path));

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        using var json = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        Assert.Equal("m1", json.RootElement.GetProperty("model").GetString());
    }

    [Theory]
    [InlineData("not json at all")]
    [InlineData("")]
    [InlineData("""{"model":42,"stream":"yes"}""")]
    [InlineData("""{"messages":[""")]
    public async Task ChatCompletion_InvalidOrOddJson_AnswersDefaultModel(string body)
    {
        await using var server = await StartAsync();
        using var client = Client(server);

        using var response = await client.SendAsync(Chat(body));

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        using var json = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        Assert.Equal("mock-model", json.RootElement.GetProperty("model").GetString());
    }

    [Fact]
    public async Task ChatCompletion_ModelNeedingEscapes_IsEchoedAsValidJson()
    {
        await using var server = await StartAsync();
        using var client = Client(server);

        using var response = await client.SendAsync(Chat("""{"model":"a\"b\\c\u00e9<+>"}"""));

        using var json = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        Assert.Equal("a\"b\\cé<+>", json.RootElement.GetProperty("model").GetString());
    }

    [Fact]
    public async Task ChatCompletion_Get_Returns405()
    {
        await using var server = await StartAsync();
        using var client = Client(server);

        using var response = await client.GetAsync("/v1/chat/completions");

        Assert.Equal(HttpStatusCode.MethodNotAllowed, response.StatusCode);
    }

    [Fact]
    public async Task Models_Get_ReturnsOpenAiList()
    {
        await using var server = await StartAsync();
        using var client = Client(server);

        using var response = await client.GetAsync("/v1/models");

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        using var json = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        Assert.Equal("list", json.RootElement.GetProperty("object").GetString());
        var model = json.RootElement.GetProperty("data")[0];
        Assert.Equal("mock-model", model.GetProperty("id").GetString());
        Assert.Equal("model", model.GetProperty("object").GetString());
    }

    [Theory]
    [InlineData("/ping")]
    [InlineData("/health")]
    public async Task HealthEndpoints_Get_Return200(string path)
    {
        await using var server = await StartAsync(new MockOptions { Status = 503, FailRate = 1, LatencyMs = 5000 });
        using var client = Client(server);

        using var response = await client.GetAsync(path);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
    }

    [Fact]
    public async Task UnknownPath_Get_Returns404JsonError()
    {
        await using var server = await StartAsync();
        using var client = Client(server);

        using var response = await client.GetAsync("/nope");

        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        using var json = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        Assert.Equal("not_found_error", json.RootElement.GetProperty("error").GetProperty("type").GetString());
    }

    [Fact]
    public async Task StatusHeader_429_ReturnsRateLimitErrorWithRetryAfter()
    {
        await using var server = await StartAsync(new MockOptions { Name = "limited" });
        using var client = Client(server);
        using var request = Chat("""{"model":"m"}""");
        request.Headers.Add(MockHeaders.Status, "429");

        using var response = await client.SendAsync(request);

        Assert.Equal(HttpStatusCode.TooManyRequests, response.StatusCode);
        Assert.Equal(TimeSpan.FromSeconds(1), response.Headers.RetryAfter?.Delta);
        Assert.Equal("limited", Assert.Single(response.Headers.GetValues(MockHeaders.Name)));
        using var json = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        var error = json.RootElement.GetProperty("error");
        Assert.Equal("rate_limit_error", error.GetProperty("type").GetString());
        Assert.Equal("rate_limit_exceeded", error.GetProperty("code").GetString());
        Assert.Contains("limited", error.GetProperty("message").GetString());
    }

    [Fact]
    public async Task StatusHeader_Success_OverridesOptionsFailure()
    {
        await using var server = await StartAsync(new MockOptions { Status = 503 });
        using var client = Client(server);
        using var request = Chat("""{"model":"m"}""");
        request.Headers.Add(MockHeaders.Status, "200");

        using var response = await client.SendAsync(request);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
    }

    [Theory]
    [InlineData("204")]
    [InlineData("304")]
    public async Task StatusHeader_BodylessStatus_AnswersWithoutBody(string status)
    {
        var logs = new CapturingLoggerFactory();
        await using var server = await StartAsync(loggerFactory: logs);
        using var client = Client(server);
        using var request = Chat("""{"model":"m"}""");
        request.Headers.Add(MockHeaders.Status, status);

        using var response = await client.SendAsync(request);

        Assert.Equal(status, ((int)response.StatusCode).ToString(System.Globalization.CultureInfo.InvariantCulture));
        Assert.Empty(await response.Content.ReadAsByteArrayAsync());
        Assert.DoesNotContain(logs.Entries, e => e.Level >= LogLevel.Warning);
    }

    [Fact]
    public async Task OptionsStatus_503_AppliesToChatCompletionsOnly()
    {
        await using var server = await StartAsync(new MockOptions { Status = 503 });
        using var client = Client(server);

        using var chat = await client.SendAsync(Chat("{}"));
        using var models = await client.GetAsync("/v1/models");

        Assert.Equal(HttpStatusCode.ServiceUnavailable, chat.StatusCode);
        using var json = JsonDocument.Parse(await chat.Content.ReadAsStringAsync());
        Assert.Equal("server_error", json.RootElement.GetProperty("error").GetProperty("type").GetString());
        Assert.Equal(HttpStatusCode.OK, models.StatusCode);
    }

    [Fact]
    public async Task FailRate_One_Returns500JsonError()
    {
        await using var server = await StartAsync(new MockOptions { FailRate = 1.0 });
        using var client = Client(server);

        for (int i = 0; i < 3; i++)
        {
            using var response = await client.SendAsync(Chat("{}"));
            Assert.Equal(HttpStatusCode.InternalServerError, response.StatusCode);
            using var json = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
            Assert.Equal("server_error", json.RootElement.GetProperty("error").GetProperty("type").GetString());
        }
    }

    [Fact]
    public async Task FailRate_HalfWithSeededRandom_MixesFailuresAndSuccesses()
    {
        await using var server = await StartAsync(new MockOptions { FailRate = 0.5, Random = new Random(1234) });
        using var client = Client(server);

        var statuses = new List<HttpStatusCode>();
        for (int i = 0; i < 40; i++)
        {
            using var response = await client.SendAsync(Chat("{}"));
            statuses.Add(response.StatusCode);
        }

        Assert.Contains(HttpStatusCode.OK, statuses);
        Assert.Contains(HttpStatusCode.InternalServerError, statuses);
        Assert.All(statuses, s => Assert.True(s is HttpStatusCode.OK or HttpStatusCode.InternalServerError));
    }

    [Fact]
    public async Task LatencyHeader_DelaysResponseHeaders()
    {
        await using var server = await StartAsync();
        using var client = Client(server);
        using var request = new HttpRequestMessage(HttpMethod.Get, "/v1/models");
        request.Headers.Add(MockHeaders.LatencyMs, "200");

        var clock = Stopwatch.StartNew();
        using var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.True(clock.Elapsed >= TimeSpan.FromMilliseconds(150), $"answered after {clock.Elapsed.TotalMilliseconds} ms");
    }

    [Fact]
    public async Task ChunksHeader_OverridesOptions()
    {
        await using var server = await StartAsync(new MockOptions { Chunks = 10, ChunkIntervalMs = 0 });
        using var client = Client(server);
        using var request = StreamChat();
        request.Headers.Add(MockHeaders.Chunks, "2");
        request.Headers.Add(MockHeaders.ChunkIntervalMs, "0");

        using var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        var events = await ReadEventsAsync(response, Stopwatch.StartNew());

        Assert.Equal(2 + 2 + 1, events.Count);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(3)]
    [InlineData(5)]
    public async Task FailMidStream_Stream_ClientReadThrowsInsteadOfCleanEnd(int failAfter)
    {
        await using var server = await StartAsync(new MockOptions { Chunks = 5, ChunkIntervalMs = 1 });
        using var client = Client(server);
        using var request = StreamChat();
        request.Headers.Add(MockHeaders.FailMidStream, failAfter.ToString(System.Globalization.CultureInfo.InvariantCulture));

        using var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var received = new List<(string, TimeSpan)>();

        await Assert.ThrowsAnyAsync<IOException>(async () =>
        {
            using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
            while (await reader.ReadLineAsync() is { } line)
            {
                if (line.StartsWith("data: ", StringComparison.Ordinal))
                    received.Add((line, TimeSpan.Zero));
            }
        });
        Assert.Equal(1 + failAfter, received.Count); // role chunk + failAfter content chunks, no [DONE]
    }

    [Fact]
    public async Task FailMidStream_NonStream_ClientReadThrows()
    {
        await using var server = await StartAsync();
        using var client = Client(server);
        using var request = Chat("{}");
        request.Headers.Add(MockHeaders.FailMidStream, "0");

        await Assert.ThrowsAnyAsync<HttpRequestException>(async () =>
        {
            using var response = await client.SendAsync(request);
        });
    }

    [Fact]
    public async Task Echo_ReturnsMethodPathQueryHeadersAndBodyLength()
    {
        await using var server = await StartAsync(new MockOptions { Name = "echoer" });
        using var client = Client(server);
        using var request = new HttpRequestMessage(HttpMethod.Put, "/any/path?x=1&y=2")
        {
            Content = new StringContent("12345", System.Text.Encoding.UTF8, "text/plain"),
        };
        request.Headers.Add(MockHeaders.Echo, "1");
        request.Headers.Add("X-Custom", "custom-value");
        request.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", "sk-test");

        using var response = await client.SendAsync(request);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        using var json = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        var root = json.RootElement;
        Assert.Equal("echoer", root.GetProperty("name").GetString());
        Assert.Equal("PUT", root.GetProperty("method").GetString());
        Assert.Equal("/any/path", root.GetProperty("path").GetString());
        Assert.Equal("?x=1&y=2", root.GetProperty("query").GetString());
        Assert.Equal(5, root.GetProperty("bodyLength").GetInt64());
        var headers = root.GetProperty("headers").EnumerateObject()
            .ToDictionary(p => p.Name, p => p.Value.EnumerateArray().Select(v => v.GetString()!).ToArray(), StringComparer.OrdinalIgnoreCase);
        Assert.Equal(["custom-value"], headers["X-Custom"]);
        Assert.Equal(["Bearer sk-test"], headers["Authorization"]);
        Assert.Equal([$"127.0.0.1:{server.Port}"], headers["Host"]);
    }

    [Fact]
    public async Task TwoServers_RunConcurrently_OnDistinctPortsAndAnswerWithTheirNames()
    {
        await using var a = await StartAsync(new MockOptions { Name = "a", Chunks = 3, ChunkIntervalMs = 20 });
        await using var b = await StartAsync(new MockOptions { Name = "b", Chunks = 3, ChunkIntervalMs = 20 });
        using var clientA = Client(a);
        using var clientB = Client(b);

        Assert.NotEqual(a.Port, b.Port);
        var responses = await Task.WhenAll(
            clientA.SendAsync(StreamChat()), clientB.SendAsync(StreamChat()),
            clientA.SendAsync(Chat("{}")), clientB.SendAsync(Chat("{}")));

        Assert.Equal(["a", "b", "a", "b"], responses.Select(r => r.Headers.GetValues(MockHeaders.Name).Single()));
        Assert.All(responses, r => Assert.Equal(HttpStatusCode.OK, r.StatusCode));
        Assert.Equal(2, a.RequestCount);
        Assert.Equal(2, b.RequestCount);
        foreach (var r in responses)
            r.Dispose();
    }

    [Fact]
    public async Task ClientDisconnect_MidStream_ServerWindsDownWithoutWarnings()
    {
        var logs = new CapturingLoggerFactory();
        await using var server = await StartAsync(new MockOptions { Chunks = 200, ChunkIntervalMs = 20 }, logs);
        using var client = Client(server);

        var response = await client.SendAsync(StreamChat(), HttpCompletionOption.ResponseHeadersRead);
        var first = await ReadEventsAsync(response, Stopwatch.StartNew(), stopAfter: 2);
        Assert.Equal(2, first.Count);
        response.Dispose(); // closes the connection mid-stream

        await WaitUntilAsync(() => server.InFlight == 0, TimeSpan.FromSeconds(10));
        Assert.DoesNotContain(logs.Entries, e => e.Level >= LogLevel.Warning);

        using var next = await client.GetAsync("/ping");
        Assert.Equal(HttpStatusCode.OK, next.StatusCode);
    }

    [Fact]
    public async Task Stop_DuringStream_EndsPromptlyAndClientSeesAbort()
    {
        const int chunks = 200, intervalMs = 50; // a natural end would take 10 s
        var logs = new CapturingLoggerFactory();
        var server = await StartAsync(new MockOptions { Chunks = chunks, ChunkIntervalMs = intervalMs }, logs);
        using var client = Client(server);
        using var response = await client.SendAsync(StreamChat(), HttpCompletionOption.ResponseHeadersRead);
        var stream = await response.Content.ReadAsStreamAsync();
        using var reader = new StreamReader(stream);
        Assert.StartsWith("data: ", await reader.ReadLineAsync());

        var clock = Stopwatch.StartNew();
        await server.DisposeAsync();
        var stopTime = clock.Elapsed;

        Assert.True(stopTime < TimeSpan.FromMilliseconds(chunks * intervalMs / 2.0), $"stop took {stopTime.TotalMilliseconds} ms");
        await Assert.ThrowsAnyAsync<IOException>(async () =>
        {
            while (await reader.ReadLineAsync() is not null) { }
        });
        Assert.DoesNotContain(logs.Entries, e => e.Level >= LogLevel.Error);
        await server.StopAsync(); // idempotent after dispose
    }

    [Fact]
    public async Task Start_InvalidOptions_ThrowsWithEveryProblem()
    {
        var options = new MockOptions { Port = -1, FailRate = 2, Chunks = -1, Address = "not an ip" };

        var ex = await Assert.ThrowsAsync<ArgumentException>(() => MockServer.StartAsync(options));

        Assert.Contains("port", ex.Message);
        Assert.Contains("failRate", ex.Message);
        Assert.Contains("chunks", ex.Message);
        Assert.Contains("address", ex.Message);
        Assert.Equal(4, options.Validate().Count);
    }

    [Fact]
    public async Task Start_PortInUse_ThrowsIOException()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;

        await Assert.ThrowsAnyAsync<IOException>(() => MockServer.StartAsync(new MockOptions { Port = port }));
    }

    [Fact]
    public async Task BaseUrl_BoundToAnyAddress_PointsAtLoopback()
    {
        await using var server = await MockServer.StartAsync(new MockOptions { Address = "0.0.0.0", Port = 0 });

        Assert.Equal($"http://127.0.0.1:{server.Port}/", server.BaseUrl.ToString());
        using var client = Client(server);
        using var response = await client.GetAsync("/ping");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
    }

    [Fact]
    public async Task Start_HostLifetime_IsNotTheConsoleOne()
    {
        await using var server = await StartAsync();

        // ConsoleLifetime would take over Ctrl-C/SIGTERM of the test runner or the proxy process.
        Assert.IsType<NoopHostLifetime>(server.Services.GetRequiredService<IHostLifetime>());
    }
}
