using System.Buffers;
using System.Net;
using LLMProxy.LoadBalancing;
using LLMProxy.RateLimiting;
using LLMProxy.Runtime;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Yarp.ReverseProxy.Forwarder;

namespace LLMProxy.Forwarding;

/// <summary>What the stages of a forward's pipeline share, other than the compiled runtime.</summary>
internal sealed record PipelineServices(IHttpForwarder Forwarder, TimeProvider Time, ILogger Logger);

/// <summary>
/// One request on its way through the stages (<see cref="Stages.IRequestStage"/>): what earlier stages learned and
/// later ones need travels here — the client, the buffered body, the group chosen — and the outcome the last stage
/// to decide set. The pipeline answers a proxy-error outcome, accounts for the request and returns the body buffer.
/// </summary>
internal sealed class RequestContext : IDisposable, IBufferedBody
{
    private string? _peerIp;

    public RequestContext(HttpContext http, ForwardRuntime forward, PipelineServices services, string requestId, CountingStream responseBody)
    {
        Http = http;
        Forward = forward;
        Services = services;
        RequestId = requestId;
        ResponseBody = responseBody;
        Peer = http.Connection.RemoteIpAddress ?? IPAddress.Loopback;
        Client = Peer;
        Group = forward.DefaultGroup;
    }

    public HttpContext Http { get; }
    public ForwardRuntime Forward { get; }
    public PipelineServices Services { get; }
    public string RequestId { get; }
    /// <summary>The client's response body, wrapped for byte counting and usage reading.</summary>
    public CountingStream ResponseBody { get; }
    /// <summary>The TCP peer.</summary>
    public IPAddress Peer { get; }
    /// <summary>The peer as text, for X-Forwarded-For.</summary>
    public string PeerIp => _peerIp ??= Peer.ToString();
    /// <summary>The client as far as limits and hashing are concerned (the peer unless a trusted proxy says otherwise).</summary>
    public IPAddress Client { get; set; }

    /// <summary>The request body, when it was buffered (replayable across attempts): rented, returned on dispose.</summary>
    public byte[]? Body { get; private set; }
    public int BodyLength { get; private set; }
    /// <summary>The body the current attempt sends, when buffered (<see cref="Body"/>, or a copy with its model or
    /// include_usage rewritten); empty when the body streams from the client.</summary>
    public ArraySegment<byte> AttemptBody { get; set; }
    /// <summary>Whether every attempt can send the body again: none, or buffered.</summary>
    public bool Replayable { get; set; }

    /// <summary>What the body says (SPEC §11), when it was buffered and read; <c>default</c> = no facts.</summary>
    public RequestFacts Facts { get; set; }

    /// <summary>Whether attempts send the body with <c>stream_options.include_usage</c> added and take the usage-only
    /// chunk out of the answer (<see cref="IncludeUsage"/>).</summary>
    public bool InjectsUsage { get; set; }
    /// <summary>Estimated LLM tokens of this request (SPEC §13.1), set by the attempt stage: what budgets reserve.</summary>
    public TokenNeed TokenEstimate { get; set; }

    /// <summary>Client buckets on the cluster (SPEC §17) this request must take a token from: added by the stages
    /// that admit a client (per IP, per client key), taken atomically with the first attempt's admission. Null
    /// without <c>cluster.redis</c>.</summary>
    public List<Cluster.SharedBucketTake>? SharedTakes { get; set; }

    /// <summary>Adds a token to take from a shared client bucket with the first attempt's admission.</summary>
    public void TakeShared(Cluster.SharedBucketTake take) => (SharedTakes ??= new List<Cluster.SharedBucketTake>(2)).Add(take);
    /// <summary>The client key the request presented (SPEC §15); null on a forward without <c>keys</c>.</summary>
    public ClientKeyRuntime? ClientKey { get; set; }
    /// <summary>Which headers carried the client key: never sent upstream.</summary>
    public ClientKeyHeaders KeyHeaders { get; set; }
    /// <summary>The request's reservation on its client key's <c>tokensPerMinute</c>; refunded on dispose unless settled.</summary>
    public RateLimiting.ClientTokenLease? ClientTokens { get; set; }

    /// <summary>The group the request goes to (the forward's default until a route says otherwise).</summary>
    public GroupRuntime Group { get; set; }
    /// <summary>Index of the route that chose <see cref="Group"/>; -1 = the default group.</summary>
    public int Route { get; set; } = -1;

    public RequestOutcome Outcome { get; set; } = RequestOutcome.Ok;
    /// <summary>Retry-After sent with a proxy-error outcome, when it has one.</summary>
    public TimeSpan? RetryAfter { get; set; }
    /// <summary>The upstream of the last attempt, for the access line.</summary>
    public string? UpstreamName { get; set; }
    public int Attempts { get; set; }

    /// <summary>Sets the outcome; false, so a stage can <c>return request.Stop(...)</c>.</summary>
    public bool Stop(RequestOutcome outcome, TimeSpan? retryAfter = null)
    {
        Outcome = outcome;
        RetryAfter = retryAfter;
        return false;
    }

    /// <summary>Takes a rented buffer holding the whole body (returned on dispose).</summary>
    public void AdoptBody(byte[] rented, int length)
    {
        Body = rented;
        BodyLength = length;
    }

    /// <summary>Takes a rented buffer holding the start of a body too long to keep, which streams behind it: not a
    /// buffered body, only returned on dispose (the attempt has sent it by then).</summary>
    public void AdoptBodyPrefix(byte[] rented) => _prefix = rented;

    private byte[]? _prefix;

    public void Dispose()
    {
        ClientTokens?.Dispose();
        if (_prefix is { } prefix)
        {
            _prefix = null;
            ArrayPool<byte>.Shared.Return(prefix);
        }
        if (Body is { } body)
        {
            Body = null;
            AttemptBody = default;
            ArrayPool<byte>.Shared.Return(body);
        }
    }
}

/// <summary>The request headers a client key came in (SPEC §15).</summary>
[Flags]
internal enum ClientKeyHeaders
{
    None = 0,
    Authorization = 1,
    ApiKey = 2,
}
