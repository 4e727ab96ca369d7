using System.Runtime.InteropServices;
using System.Security.Cryptography;
using LLMProxy.Configuration;
using LLMProxy.Observability;
using LLMProxy.Runtime;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http;

namespace LLMProxy.Forwarding.Stages;

/// <summary>
/// SPEC §15: the request must present one of the forward's client keys, as <c>Authorization: Bearer &lt;key&gt;</c>
/// (scheme in any case) or <c>x-api-key: &lt;key&gt;</c>; otherwise 401 <c>invalid_api_key</c>. Then the key's request
/// bucket: over it, 429 <c>rate_limited</c> with Retry-After. Only in the pipeline of a forward with <c>keys</c>.
/// <para>Refused as 401, never guessed at: no key; an empty one; a header sent twice; an Authorization that is not
/// Bearer; both headers carrying different values (which one is the proxy's key would be a guess, and the other would
/// go upstream); a key longer than <see cref="ClientKeyConfig.MaxKeyLength"/>. A key in the query string is not read.
/// Nothing of an unauthenticated request reaches a limiter, a budget or an upstream.</para>
/// </summary>
internal sealed class AuthenticateClientStage(ClientKeyTable keys, ForwardMetrics metrics) : IRequestStage
{
    public const string ApiKeyHeader = "x-api-key";

    public ValueTask<bool> RunAsync(RequestContext request)
    {
        var headers = request.Http.Request.Headers;
        var authorization = headers.Authorization;
        var apiKey = headers[ApiKeyHeader];
        if (authorization.Count > 1 || apiKey.Count > 1 || (authorization.Count == 0 && apiKey.Count == 0))
        {
            return ValueTask.FromResult(request.Stop(RequestOutcome.InvalidApiKey));
        }
        ReadOnlySpan<char> presented = default;
        var from = ClientKeyHeaders.None;
        if (authorization.Count == 1)
        {
            if (!BearerToken.TryParse(authorization, out presented))
            {
                return ValueTask.FromResult(request.Stop(RequestOutcome.InvalidApiKey));
            }
            from = ClientKeyHeaders.Authorization;
        }
        if (apiKey.Count == 1)
        {
            var value = apiKey[0].AsSpan().Trim();
            if (from != ClientKeyHeaders.None && !value.SequenceEqual(presented))
            {
                return ValueTask.FromResult(request.Stop(RequestOutcome.InvalidApiKey));
            }
            presented = value;
            from |= ClientKeyHeaders.ApiKey;
        }
        if (Match(request, presented) is not { } key)
        {
            return ValueTask.FromResult(request.Stop(RequestOutcome.InvalidApiKey));
        }
        request.ClientKey = key;
        request.KeyHeaders = from;
        if (!key.Limiter.TryAcquire(out var retryAfter))
        {
            metrics.ClientKeyRejections.Inc();
            return ValueTask.FromResult(request.Stop(RequestOutcome.ClientKeyRateLimited, retryAfter));
        }
        if (key.SharedRequests is { } shared)
        {
            request.TakeShared(shared); // SPEC §17: the key's bucket on the cluster, with the first attempt's admission
        }
        return ValueTask.FromResult(true);
    }

    /// <summary>
    /// The key <paramref name="presented"/> is. A keep-alive connection presents the same key on every request: the key
    /// this connection last authenticated with, against this same table, is taken again when the presented one equals it
    /// (compared in constant time, like the digests), without hashing it again. Anything else — another key, a reload
    /// since, a connection without items, an HTTP/2 stream — goes to the table, and a match becomes the connection's last key.
    /// </summary>
    private ClientKeyRuntime? Match(RequestContext request, ReadOnlySpan<char> presented)
    {
        // Only an HTTP/1.x connection, one request at a time, keeps its last key: the streams of an HTTP/2 connection run
        // at once, and the connection's items are a plain dictionary.
        var protocol = request.Http.Request.Protocol;
        var items = HttpProtocol.IsHttp11(protocol) || HttpProtocol.IsHttp10(protocol)
            ? request.Http.Features.Get<IConnectionItemsFeature>()?.Items
            : null;
        if (items is not null && items.TryGetValue(LastKey.Item, out var item) && item is LastKey last && last.Table == keys
            && CryptographicOperations.FixedTimeEquals(MemoryMarshal.AsBytes(presented), MemoryMarshal.AsBytes(last.Presented.AsSpan())))
        {
            return last.Key;
        }
        var key = keys.Match(presented);
        if (key is not null && items is not null)
        {
            items[LastKey.Item] = new LastKey(keys, presented.ToString(), key);
        }
        return key;
    }

    /// <summary>The key a connection last authenticated with (its connection item). A plain class, not a record: a
    /// record's generated <c>ToString</c> would print the key to anything that ever formats the connection's items.</summary>
    private sealed class LastKey(ClientKeyTable table, string presented, ClientKeyRuntime key)
    {
        public static readonly object Item = new();

        public ClientKeyTable Table { get; } = table;
        public string Presented { get; } = presented;
        public ClientKeyRuntime Key { get; } = key;

        public override string ToString() => $"last client key: {Key.Name}";
    }
}
