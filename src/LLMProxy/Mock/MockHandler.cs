using System.Buffers;
using System.Collections.Concurrent;
using System.Globalization;
using System.IO.Pipelines;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Unicode;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Primitives;

namespace LLMProxy.Mock;

// Hand dispatch instead of routing: four fixed routes plus a path-suffix match, on the benchmark's hot path.
internal sealed class MockHandler(MockOptions options, CancellationToken stopping)
{
    private const string JsonContentType = "application/json";
    private const string EventStreamContentType = "text/event-stream";
    private const int MaxChunks = 100_000;
    private static readonly TimeSpan AbortGrace = TimeSpan.FromMilliseconds(50);

    private static readonly JavaScriptEncoder ModelEncoder = MockPayloads.RelaxedJson.Encoder!;
    private static readonly JsonEncodedText DefaultModel = JsonEncodedText.Encode(MockPayloads.DefaultModel, ModelEncoder);
    private static readonly StringValues RetryAfterOneSecond = new("1");
    private static readonly byte[] OkBody = "ok"u8.ToArray();

    /// <summary><c>GET</c>: <c>{"name","requests","rateLimited","tokensCharged"}</c> (what a benchmark reads).</summary>
    internal const string StatsPath = "/mock/stats";

    private readonly StringValues _name = new(options.Name);
    private readonly ConcurrentDictionary<int, byte[]> _errors = new();
    private readonly Lock _randomLock = new();
    private readonly bool _randomIsShared = ReferenceEquals(options.Random, Random.Shared);
    private readonly MockLimits _limits = new(options);
    private long _requests;
    private int _inFlight;

    public long RequestCount => Interlocked.Read(ref _requests);

    /// <summary>Completions refused with 429 because their key was out of its limits (<see cref="MockOptions.TokensPerMinute"/>).</summary>
    public long RateLimitedCount => _limits.RateLimited;

    /// <summary>Tokens charged to keys by the limits (0 without limits).</summary>
    public long TokensCharged => _limits.TokensCharged;

    /// <summary>Requests whose handler has not returned yet; lets tests see that an aborted stream was wound down.</summary>
    public int InFlight => Volatile.Read(ref _inFlight);

    public async Task HandleAsync(HttpContext context)
    {
        long requestNumber = Interlocked.Increment(ref _requests);
        Interlocked.Increment(ref _inFlight);
        // Linked so that stopping the server ends delays and streams at once instead of waiting them out.
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted, stopping);
        var ct = cts.Token;
        try
        {
            await HandleCoreAsync(context, requestNumber, ct);
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            // Client gone or server stopping: no clean end to fake, no exception for Kestrel to log.
            context.Abort();
        }
        catch (IOException) when (context.RequestAborted.IsCancellationRequested)
        {
            // Write or read on a connection the client already closed.
        }
        finally
        {
            Interlocked.Decrement(ref _inFlight);
        }
    }

    private async Task HandleCoreAsync(HttpContext context, long requestNumber, CancellationToken ct)
    {
        var request = context.Request;
        var headers = request.Headers;
        context.Response.Headers[MockHeaders.Name] = _name;

        string path = request.Path.Value ?? "/";
        bool isMessages = path.EndsWith("/v1/messages", StringComparison.OrdinalIgnoreCase);
        bool isChat = isMessages || path.EndsWith("/chat/completions", StringComparison.OrdinalIgnoreCase);
        MockRateLimits.Echo(headers, context.Response.Headers, isMessages, options.TimeProvider);

        int latency = TryGetInt(headers, MockHeaders.LatencyMs, 0, int.MaxValue, out int l) ? l
            : isChat ? options.LatencyMs : 0;
        if (latency > 0)
            await Task.Delay(TimeSpan.FromMilliseconds(latency), options.TimeProvider, ct);

        int status = 0;
        bool hasStatus = TryGetInt(headers, MockHeaders.Status, 200, 599, out int s);
        if (headers.TryGetValue(MockHeaders.Error, out var errorType) && MockErrors.IsErrorType(errorType.ToString()))
        {
            string type = errorType.ToString();
            int errorStatus = hasStatus && !IsSuccess(s) ? s : MockErrors.DefaultStatus(type);
            await WriteBytesAsync(context, errorStatus, JsonContentType, MockErrors.Body(type, isMessages, options.Name, errorStatus), ct);
            return;
        }
        if (hasStatus)
        {
            if (!IsSuccess(s))
            {
                await WriteErrorAsync(context, s, ct, isMessages);
                return;
            }
            status = s;
        }

        if (ForbidsBody(status))
        {
            context.Response.StatusCode = status;
            return;
        }

        if (headers.TryGetValue(MockHeaders.Echo, out var echo) && echo == "1")
        {
            await WriteEchoAsync(context, status == 0 ? StatusCodes.Status200OK : status, ct);
            return;
        }

        if (isChat)
        {
            if (!HttpMethods.IsPost(request.Method))
            {
                await WriteErrorAsync(context, StatusCodes.Status405MethodNotAllowed, ct, isMessages);
                return;
            }
            if (status == 0)
            {
                if (!IsSuccess(options.Status))
                {
                    await WriteErrorAsync(context, options.Status, ct, isMessages);
                    return;
                }
                if (ShouldFail())
                {
                    await WriteErrorAsync(context, StatusCodes.Status500InternalServerError, ct, isMessages);
                    return;
                }
                status = options.Status;
                if (ForbidsBody(status))
                {
                    context.Response.StatusCode = status;
                    return;
                }
            }
            await WriteCompletionAsync(context, requestNumber, status, isMessages, ct);
            return;
        }

        bool isRead = HttpMethods.IsGet(request.Method) || HttpMethods.IsHead(request.Method);
        if (path.Equals("/ping", StringComparison.OrdinalIgnoreCase) || path.Equals("/health", StringComparison.OrdinalIgnoreCase))
        {
            if (isRead)
                await WriteBytesAsync(context, StatusCodes.Status200OK, "text/plain", OkBody, ct);
            else
                await WriteErrorAsync(context, StatusCodes.Status405MethodNotAllowed, ct);
        }
        else if (path.Equals(StatsPath, StringComparison.OrdinalIgnoreCase))
        {
            if (isRead)
                await WriteStatsAsync(context, ct);
            else
                await WriteErrorAsync(context, StatusCodes.Status405MethodNotAllowed, ct);
        }
        else if (path.EndsWith("/models", StringComparison.OrdinalIgnoreCase))
        {
            if (isRead)
                await WriteBytesAsync(context, StatusCodes.Status200OK, JsonContentType, MockPayloads.ModelsList, ct);
            else
                await WriteErrorAsync(context, StatusCodes.Status405MethodNotAllowed, ct);
        }
        else
        {
            await WriteErrorAsync(context, StatusCodes.Status404NotFound, ct);
        }
    }

    private bool ShouldFail()
    {
        double rate = options.FailRate;
        if (rate <= 0)
            return false;
        if (rate >= 1)
            return true;
        if (_randomIsShared)
            return Random.Shared.NextDouble() < rate;
        lock (_randomLock)
            return options.Random.NextDouble() < rate;
    }

    private async Task WriteCompletionAsync(HttpContext context, long id, int status, bool anthropic, CancellationToken ct)
    {
        var headers = context.Request.Headers;
        var chat = await ReadChatRequestAsync(context.Request.BodyReader, ct);
        int chunks = TryGetInt(headers, MockHeaders.Chunks, 0, MaxChunks, out int c) ? c : options.Chunks;
        int failAfter = TryGetInt(headers, MockHeaders.FailMidStream, 0, int.MaxValue, out int f) ? f : -1;
        long created = options.TimeProvider.GetUtcNow().ToUnixTimeSeconds();
        // Token estimate: one prompt token per 4 request bytes, one completion token per chunk, plus what the
        // request scripts as cached (within the prompt) and reasoning (added to the completion).
        long prompt = Math.Max(1, (chat.BodyLength + 3) / 4);
        long cached = TryGetInt(headers, MockHeaders.CachedTokens, 0, int.MaxValue, out int ca) ? Math.Min(ca, prompt) : 0;
        long reasoning = TryGetInt(headers, MockHeaders.ReasoningTokens, 0, int.MaxValue, out int re) ? re : 0;
        var usage = new Usage(prompt, chunks + reasoning, cached, reasoning);
        int interval = TryGetInt(headers, MockHeaders.ChunkIntervalMs, 0, int.MaxValue, out int i) ? i : options.ChunkIntervalMs;
        if (_limits.Enabled)
        {
            var verdict = _limits.Take(headers, usage.PromptTokens + usage.CompletionTokens);
            _limits.WriteHeaders(context.Response.Headers, verdict, anthropic);
            if (!verdict.Allowed)
            {
                await WriteBytesAsync(context, StatusCodes.Status429TooManyRequests, JsonContentType, _limits.ErrorBody(verdict, anthropic), ct);
                return;
            }
        }

        if (anthropic)
        {
            var messages = new MockAnthropic(context, options.TimeProvider, id, chat.Model, usage, chunks, interval, failAfter);
            await (chat.Stream ? messages.StreamAsync(status, ct) : messages.WriteAsync(status, ct));
            return;
        }
        if (chat.Stream)
        {
            await StreamCompletionAsync(context, status, id, created, chat.Model, chunks, interval, failAfter, chat.IncludeUsage ? usage : null, ct);
            return;
        }

        byte[] content = MockPayloads.Content(chunks);
        byte[] buffer = ArrayPool<byte>.Shared.Rent(MockPayloads.CompletionMaxLength(chat.Model.EncodedUtf8Bytes.Length, content.Length));
        try
        {
            int length = MockPayloads.WriteCompletion(buffer, id, created, chat.Model.EncodedUtf8Bytes, content, usage);
            var response = context.Response;
            response.StatusCode = status;
            response.ContentType = JsonContentType;
            response.ContentLength = length;
            if (failAfter >= 0)
            {
                // Promise the whole body, deliver half, then cut the connection.
                await response.Body.WriteAsync(buffer.AsMemory(0, length / 2), ct);
                await response.Body.FlushAsync(ct);
                await BreakConnectionAsync(context);
                return;
            }
            await response.Body.WriteAsync(buffer.AsMemory(0, length), ct);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private async Task StreamCompletionAsync(HttpContext context, int status, long id, long created, JsonEncodedText model,
        int chunks, int intervalMs, int failAfter, Usage? usage, CancellationToken ct)
    {
        var response = context.Response;
        response.StatusCode = status;
        response.ContentType = EventStreamContentType;
        response.Headers.CacheControl = "no-cache";
        context.Features.Get<IHttpResponseBodyFeature>()?.DisableBuffering();
        await response.StartAsync(ct);

        var writer = response.BodyWriter;
        WriteRoleChunk(writer, id, created, model);
        if (!await FlushAsync(writer, ct))
            return;

        for (int index = 0; index < chunks; index++)
        {
            if (index == failAfter)
            {
                await BreakConnectionAsync(context);
                return;
            }
            if (intervalMs > 0)
                await Task.Delay(TimeSpan.FromMilliseconds(intervalMs), options.TimeProvider, ct);
            WriteContentChunk(writer, id, created, model, index);
            if (!await FlushAsync(writer, ct))
                return;
        }
        if (failAfter >= chunks)
        {
            await BreakConnectionAsync(context);
            return;
        }

        WriteStopChunk(writer, id, created, model);
        if (usage is { } asked)
        {
            // As OpenAI: the usage-only chunk is sent only to a request that set stream_options.include_usage.
            var model8 = model.EncodedUtf8Bytes;
            writer.Advance(MockPayloads.WriteUsageChunk(writer.GetSpan(MockPayloads.StopChunkMaxLength(model8.Length)), id, created, model8, asked));
        }
        writer.Write(MockPayloads.Done);
        await FlushAsync(writer, ct);
    }

    // Kestrel's Abort drops output still queued for the socket, so a flushed chunk could vanish and the
    // client would see fewer chunks than scripted; a short grace lets the transport send them first.
    internal static async Task BreakConnectionAsync(HttpContext context)
    {
        await Task.Delay(AbortGrace);
        context.Abort();
    }

    private static void WriteRoleChunk(PipeWriter writer, long id, long created, JsonEncodedText model)
    {
        var model8 = model.EncodedUtf8Bytes;
        int written = MockPayloads.WriteRoleChunk(writer.GetSpan(MockPayloads.RoleChunkMaxLength(model8.Length)), id, created, model8);
        writer.Advance(written);
    }

    private static void WriteContentChunk(PipeWriter writer, long id, long created, JsonEncodedText model, int index)
    {
        var model8 = model.EncodedUtf8Bytes;
        int written = MockPayloads.WriteContentChunk(writer.GetSpan(MockPayloads.ContentChunkMaxLength(model8.Length)), id, created, model8, index);
        writer.Advance(written);
    }

    private static void WriteStopChunk(PipeWriter writer, long id, long created, JsonEncodedText model)
    {
        var model8 = model.EncodedUtf8Bytes;
        int written = MockPayloads.WriteStopChunk(writer.GetSpan(MockPayloads.StopChunkMaxLength(model8.Length)), id, created, model8);
        writer.Advance(written);
    }

    /// <returns>false when the client is gone and writing should stop.</returns>
    private static async ValueTask<bool> FlushAsync(PipeWriter writer, CancellationToken ct)
    {
        var result = await writer.FlushAsync(ct);
        return !result.IsCompleted && !result.IsCanceled;
    }

    private async Task WriteErrorAsync(HttpContext context, int status, CancellationToken ct, bool anthropic = false)
    {
        if (status == StatusCodes.Status429TooManyRequests)
            context.Response.Headers.RetryAfter = RetryAfterOneSecond;
        if (ForbidsBody(status))
        {
            context.Response.StatusCode = status;
            return;
        }
        byte[] body = anthropic
            ? _errors.GetOrAdd(-status, static (code, name) => MockErrors.Anthropic(-code, name), options.Name)
            : _errors.GetOrAdd(status, static (code, name) => MockPayloads.Error(code, name), options.Name);
        await WriteBytesAsync(context, status, JsonContentType, body, ct);
    }

    private static async Task WriteBytesAsync(HttpContext context, int status, string contentType, byte[] body, CancellationToken ct)
    {
        var response = context.Response;
        response.StatusCode = status;
        response.ContentType = contentType;
        response.ContentLength = body.Length;
        await response.Body.WriteAsync(body, ct);
    }

    private async Task WriteStatsAsync(HttpContext context, CancellationToken ct)
    {
        var response = context.Response;
        response.StatusCode = StatusCodes.Status200OK;
        response.ContentType = JsonContentType;
        await using (var json = new Utf8JsonWriter(response.BodyWriter, MockPayloads.RelaxedJson))
        {
            json.WriteStartObject();
            json.WriteString("name", options.Name);
            json.WriteNumber("requests", RequestCount);
            json.WriteNumber("rateLimited", RateLimitedCount);
            json.WriteNumber("tokensCharged", TokensCharged);
            json.WriteEndObject();
        }
        await response.BodyWriter.FlushAsync(ct);
    }

    private async Task WriteEchoAsync(HttpContext context, int status, CancellationToken ct)
    {
        var request = context.Request;
        long bodyLength = await DrainAsync(request.BodyReader, ct);
        var response = context.Response;
        response.StatusCode = status;
        response.ContentType = JsonContentType;
        await using (var json = new Utf8JsonWriter(response.BodyWriter, MockPayloads.RelaxedJson))
        {
            json.WriteStartObject();
            json.WriteString("name", options.Name);
            json.WriteString("method", request.Method);
            json.WriteString("path", request.PathBase.Add(request.Path).Value ?? "");
            json.WriteString("query", request.QueryString.Value ?? "");
            json.WriteString("protocol", request.Protocol);
            json.WriteStartObject("headers");
            foreach (var (name, values) in request.Headers)
            {
                json.WriteStartArray(name);
                foreach (string? value in values)
                    json.WriteStringValue(value);
                json.WriteEndArray();
            }
            json.WriteEndObject();
            json.WriteNumber("bodyLength", bodyLength);
            json.WriteEndObject();
        }
        await response.BodyWriter.FlushAsync(ct);
    }

    private static async Task<long> DrainAsync(PipeReader reader, CancellationToken ct)
    {
        long length = 0;
        while (true)
        {
            var result = await reader.ReadAsync(ct);
            length += result.Buffer.Length;
            reader.AdvanceTo(result.Buffer.End);
            if (result.IsCompleted || result.IsCanceled)
                return length;
        }
    }

    private static async Task<ChatRequest> ReadChatRequestAsync(PipeReader reader, CancellationToken ct)
    {
        while (true)
        {
            var result = await reader.ReadAsync(ct);
            if (result.IsCompleted || result.IsCanceled)
            {
                var chat = ParseChatRequest(result.Buffer);
                reader.AdvanceTo(result.Buffer.End);
                return chat;
            }
            // Consume nothing, examine everything: the next read returns the whole body so far.
            reader.AdvanceTo(result.Buffer.Start, result.Buffer.End);
        }
    }

    /// <summary>Picks the top-level <c>model</c> and <c>stream</c>; anything malformed leaves the defaults
    /// (a mock answers garbage with a normal completion rather than a 400).</summary>
    internal static ChatRequest ParseChatRequest(ReadOnlySequence<byte> body)
    {
        var model = DefaultModel;
        bool stream = false, includeUsage = false;
        try
        {
            var reader = new Utf8JsonReader(body, new JsonReaderOptions
            {
                AllowTrailingCommas = true,
                CommentHandling = JsonCommentHandling.Skip,
            });
            if (reader.Read() && reader.TokenType == JsonTokenType.StartObject)
            {
                while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
                {
                    if (reader.ValueTextEquals("model"u8))
                    {
                        reader.Read();
                        if (reader.TokenType == JsonTokenType.String)
                            model = EncodeModel(ref reader);
                        else
                            reader.Skip();
                    }
                    else if (reader.ValueTextEquals("stream"u8))
                    {
                        reader.Read();
                        stream = reader.TokenType == JsonTokenType.True;
                        reader.Skip();
                    }
                    else if (reader.ValueTextEquals("stream_options"u8))
                    {
                        reader.Read();
                        includeUsage = ReadIncludeUsage(ref reader);
                    }
                    else
                    {
                        reader.Read();
                        reader.Skip();
                    }
                }
            }
        }
        catch (JsonException)
        {
            // Keep what was read before the error.
        }
        return new ChatRequest(model, stream, body.Length, includeUsage);
    }

    /// <summary><c>stream_options.include_usage</c> is true; leaves the reader past the stream_options value.</summary>
    private static bool ReadIncludeUsage(ref Utf8JsonReader reader)
    {
        if (reader.TokenType != JsonTokenType.StartObject)
        {
            reader.Skip();
            return false;
        }
        bool value = false;
        while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
        {
            bool wanted = reader.ValueTextEquals("include_usage"u8);
            reader.Read();
            if (wanted)
                value = reader.TokenType == JsonTokenType.True;
            reader.Skip();
        }
        return value;
    }

    private static JsonEncodedText EncodeModel(ref Utf8JsonReader reader)
    {
        if (!reader.HasValueSequence && !reader.ValueIsEscaped && reader.ValueSpan.Length > 0 && Utf8.IsValid(reader.ValueSpan))
            return JsonEncodedText.Encode(reader.ValueSpan, ModelEncoder);
        try
        {
            string? model = reader.GetString();
            return string.IsNullOrEmpty(model) ? DefaultModel : JsonEncodedText.Encode(model, ModelEncoder);
        }
        catch (Exception ex) when (ex is InvalidOperationException or ArgumentException)
        {
            return DefaultModel; // invalid UTF-8 or a lone surrogate escape: tolerated like any malformed body
        }
    }

    private static bool TryGetInt(IHeaderDictionary headers, string name, int min, int max, out int value)
    {
        value = 0;
        return headers.TryGetValue(name, out var raw)
            && int.TryParse(raw.ToString(), NumberStyles.None, CultureInfo.InvariantCulture, out value)
            && value >= min && value <= max;
    }

    private static bool IsSuccess(int status) => status is >= 200 and <= 299;

    // Kestrel refuses a body with these statuses.
    private static bool ForbidsBody(int status) =>
        status is StatusCodes.Status204NoContent or StatusCodes.Status205ResetContent or StatusCodes.Status304NotModified;

    internal readonly record struct ChatRequest(JsonEncodedText Model, bool Stream, long BodyLength, bool IncludeUsage = false);
}
