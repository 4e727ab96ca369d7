using System.Buffers.Text;
using System.Collections.Concurrent;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;

namespace LLMProxy.Mock;

// Response bodies assembled from precomputed UTF-8 segments: the mock sits under benchmarks, so a
// completion costs a few span copies instead of a serializer pass. Only the id, created timestamp,
// model and token counts vary per request.
internal static class MockPayloads
{
    public const string DefaultModel = "mock-model";

    /// <summary>Bodies are JSON for API clients, never HTML, so quotes and '+' need not become \u escapes.</summary>
    public static readonly JsonWriterOptions RelaxedJson = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    private static readonly string[] Words =
        ["This", "is", "a", "streamed", "answer", "from", "the", "LLMProxy", "mock", "upstream."];

    // Word i as the content of chunk i: the first without, later ones with a leading space, so the
    // concatenated stream equals the non-streamed content.
    private static readonly byte[][] FirstWord = [.. Words.Select(w => Encoding.UTF8.GetBytes(w))];
    private static readonly byte[][] LaterWord = [.. Words.Select(w => Encoding.UTF8.GetBytes(" " + w))];
    private static readonly int MaxWordBytes = LaterWord.Max(w => w.Length);

    // chat.completion
    private static ReadOnlySpan<byte> CompletionId => "{\"id\":\"chatcmpl-mock-"u8;
    private static ReadOnlySpan<byte> CompletionObject => "\",\"object\":\"chat.completion\",\"created\":"u8;
    private static ReadOnlySpan<byte> ModelStart => ",\"model\":\""u8;
    private static ReadOnlySpan<byte> MessageStart =>
        "\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\""u8;
    private static ReadOnlySpan<byte> MessageEnd => "\"},\"logprobs\":null,\"finish_reason\":\"stop\"}],"u8;
    private static ReadOnlySpan<byte> UsagePrompt => "\"usage\":{\"prompt_tokens\":"u8;
    private static ReadOnlySpan<byte> UsageCompletion => ",\"completion_tokens\":"u8;
    private static ReadOnlySpan<byte> UsageTotal => ",\"total_tokens\":"u8;
    private static ReadOnlySpan<byte> UsageCached => ",\"prompt_tokens_details\":{\"cached_tokens\":"u8;
    private static ReadOnlySpan<byte> UsageReasoning => ",\"audio_tokens\":0},\"completion_tokens_details\":{\"reasoning_tokens\":"u8;
    private static ReadOnlySpan<byte> UsageDetailsEnd => ",\"audio_tokens\":0,\"accepted_prediction_tokens\":0,\"rejected_prediction_tokens\":0}}"u8;
    private static ReadOnlySpan<byte> CloseBrace => "}"u8;

    // chat.completion.chunk (SSE)
    private static ReadOnlySpan<byte> ChunkId => "data: {\"id\":\"chatcmpl-mock-"u8;
    private static ReadOnlySpan<byte> ChunkObject => "\",\"object\":\"chat.completion.chunk\",\"created\":"u8;
    private static ReadOnlySpan<byte> ChunkChoices => "\",\"choices\":[{\"index\":0,\"delta\":"u8;
    private static ReadOnlySpan<byte> RoleDelta =>
        "{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n"u8;
    private static ReadOnlySpan<byte> ContentDeltaStart => "{\"content\":\""u8;
    private static ReadOnlySpan<byte> ContentDeltaEnd => "\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n"u8;
    private static ReadOnlySpan<byte> StopDelta => "{},\"logprobs\":null,\"finish_reason\":\"stop\"}]}\n\n"u8;
    private static ReadOnlySpan<byte> NoChoices => "\",\"choices\":[],"u8;
    private static ReadOnlySpan<byte> EventEnd => "\n\n"u8;
    public static ReadOnlySpan<byte> Done => "data: [DONE]\n\n"u8;

    // Fixed parts of one chunk event plus room for three longs; model and content are added per call.
    private const int ChunkOverhead = 1024;

    private static readonly ConcurrentDictionary<int, byte[]> ContentCache = new();

    public static byte[] ModelsList { get; } = BuildModelsList();

    public static byte[] Content(int chunks) =>
        // Bounded: a handful of distinct chunk counts per process (options plus test overrides).
        chunks <= 4096 ? ContentCache.GetOrAdd(chunks, BuildContent) : BuildContent(chunks);

    private static byte[] BuildContent(int chunks)
    {
        var bytes = new List<byte>(chunks * 8);
        for (int i = 0; i < chunks; i++)
            bytes.AddRange(Word(i));
        return [.. bytes];
    }

    private static byte[] Word(int index) => index == 0 ? FirstWord[0] : LaterWord[index % Words.Length];

    /// <summary>The content of an answer of <paramref name="chunks"/> words, as text (for the Anthropic shape).</summary>
    public static string ContentText(int chunks) => Encoding.UTF8.GetString(Content(chunks));

    /// <summary>Word <paramref name="index"/> as streamed, as text.</summary>
    public static string WordText(int index) => Encoding.UTF8.GetString(Word(index));

    public static int CompletionMaxLength(int modelLength, int contentLength) => 1024 + modelLength + contentLength;

    public static int WriteCompletion(Span<byte> dest, long id, long created, ReadOnlySpan<byte> model,
        ReadOnlySpan<byte> content, Usage usage)
    {
        var b = new ByteBuilder(dest);
        b.Append(CompletionId); b.Append(id);
        b.Append(CompletionObject); b.Append(created);
        b.Append(ModelStart); b.Append(model);
        b.Append(MessageStart); b.Append(content); b.Append(MessageEnd);
        AppendUsage(ref b, usage);
        b.Append(CloseBrace);
        return b.Length;
    }

    public static int RoleChunkMaxLength(int modelLength) => ChunkOverhead + modelLength;

    public static int WriteRoleChunk(Span<byte> dest, long id, long created, ReadOnlySpan<byte> model)
    {
        var b = new ByteBuilder(dest);
        AppendChunkPrefix(ref b, id, created, model);
        b.Append(RoleDelta);
        return b.Length;
    }

    public static int ContentChunkMaxLength(int modelLength) => ChunkOverhead + modelLength + MaxWordBytes;

    public static int WriteContentChunk(Span<byte> dest, long id, long created, ReadOnlySpan<byte> model, int index)
    {
        var b = new ByteBuilder(dest);
        AppendChunkPrefix(ref b, id, created, model);
        b.Append(ContentDeltaStart); b.Append(Word(index)); b.Append(ContentDeltaEnd);
        return b.Length;
    }

    public static int StopChunkMaxLength(int modelLength) => ChunkOverhead + modelLength;

    public static int WriteStopChunk(Span<byte> dest, long id, long created, ReadOnlySpan<byte> model)
    {
        var b = new ByteBuilder(dest);
        AppendChunkPrefix(ref b, id, created, model);
        b.Append(StopDelta);
        return b.Length;
    }

    /// <summary>The extra chunk OpenAI sends last when the request set <c>stream_options.include_usage</c>:
    /// <c>"choices":[]</c> and the stream's usage.</summary>
    public static int WriteUsageChunk(Span<byte> dest, long id, long created, ReadOnlySpan<byte> model, Usage usage)
    {
        var b = new ByteBuilder(dest);
        b.Append(ChunkId); b.Append(id);
        b.Append(ChunkObject); b.Append(created);
        b.Append(ModelStart); b.Append(model);
        b.Append(NoChoices);
        AppendUsage(ref b, usage);
        b.Append(CloseBrace);
        b.Append(EventEnd);
        return b.Length;
    }

    private static void AppendChunkPrefix(ref ByteBuilder b, long id, long created, ReadOnlySpan<byte> model)
    {
        b.Append(ChunkId); b.Append(id);
        b.Append(ChunkObject); b.Append(created);
        b.Append(ModelStart); b.Append(model);
        b.Append(ChunkChoices);
    }

    private static void AppendUsage(ref ByteBuilder b, Usage usage)
    {
        b.Append(UsagePrompt); b.Append(usage.PromptTokens);
        b.Append(UsageCompletion); b.Append(usage.CompletionTokens);
        b.Append(UsageTotal); b.Append(usage.PromptTokens + usage.CompletionTokens);
        b.Append(UsageCached); b.Append(usage.CachedTokens);
        b.Append(UsageReasoning); b.Append(usage.ReasoningTokens);
        b.Append(UsageDetailsEnd);
    }

    /// <summary>OpenAI-style error body; the type/code pair follows what the OpenAI API sends for the status.</summary>
    public static byte[] Error(int status, string mockName)
    {
        var (type, code) = status switch
        {
            400 => ("invalid_request_error", "invalid_request"),
            401 => ("authentication_error", "invalid_api_key"),
            403 => ("permission_error", "permission_denied"),
            404 => ("not_found_error", "not_found"),
            405 => ("invalid_request_error", "method_not_allowed"),
            413 => ("invalid_request_error", "request_too_large"),
            429 => ("rate_limit_error", "rate_limit_exceeded"),
            >= 500 => ("server_error", "server_error"),
            _ => ("invalid_request_error", "mock_status"),
        };
        using var stream = new MemoryStream(256);
        using (var w = new Utf8JsonWriter(stream, RelaxedJson))
        {
            w.WriteStartObject();
            w.WriteStartObject("error");
            w.WriteString("message", $"mock '{mockName}' answered {status}");
            w.WriteString("type", type);
            w.WriteNull("param");
            w.WriteString("code", code);
            w.WriteEndObject();
            w.WriteEndObject();
        }
        return stream.ToArray();
    }

    private static byte[] BuildModelsList()
    {
        using var stream = new MemoryStream(256);
        using (var w = new Utf8JsonWriter(stream))
        {
            w.WriteStartObject();
            w.WriteString("object", "list");
            w.WriteStartArray("data");
            w.WriteStartObject();
            w.WriteString("id", DefaultModel);
            w.WriteString("object", "model");
            w.WriteNumber("created", 1700000000);
            w.WriteString("owned_by", "llmproxy-mock");
            w.WriteEndObject();
            w.WriteEndArray();
            w.WriteEndObject();
        }
        return stream.ToArray();
    }

    private ref struct ByteBuilder(Span<byte> dest)
    {
        private readonly Span<byte> _dest = dest;
        public int Length { get; private set; }

        public void Append(scoped ReadOnlySpan<byte> bytes)
        {
            bytes.CopyTo(_dest[Length..]);
            Length += bytes.Length;
        }

        public void Append(long value)
        {
            if (!Utf8Formatter.TryFormat(value, _dest[Length..], out int written))
                throw new InvalidOperationException("Mock payload buffer too small."); // sizing bug, not a runtime condition
            Length += written;
        }
    }
}

/// <summary>Token usage reported by the mock; <see cref="CachedTokens"/> is part of <see cref="PromptTokens"/> and
/// <see cref="ReasoningTokens"/> part of <see cref="CompletionTokens"/>, as OpenAI reports them.</summary>
internal readonly record struct Usage(long PromptTokens, long CompletionTokens, long CachedTokens = 0, long ReasoningTokens = 0);
