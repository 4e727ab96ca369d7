using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text;
using LLMProxy.Configuration;
using LLMProxy.Observability;
using LLMProxy.RateLimiting;
using LLMProxy.Routing;

namespace LLMProxy.Runtime;

/// <summary>One client key of a forward (SPEC §15), compiled: its SHA-256, allowed models, limits and metrics.</summary>
internal sealed class ClientKeyRuntime
{
    private readonly ModelGlob[]? _models;
    private readonly ProxyMetrics _metrics;
    private readonly ConcurrentDictionary<MemberMetrics, TokenCounters> _tokens = new();

    public ClientKeyRuntime(ClientKeyConfig config, string forward, ProxyMetrics metrics, IClientKeyLimiter limiter)
    {
        Config = config;
        Name = config.Name;
        Digest = config.Key is { } key ? SHA256.HashData(Encoding.UTF8.GetBytes(key)) : Convert.FromHexString(config.Sha256!);
        _models = config.Models is { } models ? [.. models.Select(ModelGlob.Parse)] : null;
        _metrics = metrics;
        Limiter = limiter;
        Requests = new ForwardMetrics.ClientRequests(metrics, forward, config.Name);
    }

    public ClientKeyConfig Config { get; }
    /// <summary>The key's name: the <c>client</c> label and access-line field. Never the key.</summary>
    public string Name { get; }
    /// <summary>SHA-256 of the key's UTF-8 bytes (32 bytes).</summary>
    public byte[] Digest { get; }
    /// <summary>The key's limits on this instance, kept across a reload that leaves this key's config unchanged.</summary>
    public IClientKeyLimiter Limiter { get; }
    /// <summary>This key's <c>ratelimit</c> bucket on the cluster (SPEC §17); null without <c>cluster.redis</c> or
    /// <c>ratelimit</c>.</summary>
    public Cluster.SharedBucketTake? SharedRequests { get; init; }
    /// <summary>This key's <c>tokensPerMinute</c> budget on the cluster (SPEC §17), reserved from with the first
    /// attempt's admission; null without <c>cluster.redis</c> or <c>tokensPerMinute</c>.</summary>
    public Cluster.SharedBudget? SharedTokens { get; init; }
    public ForwardMetrics.ClientRequests Requests { get; }

    /// <summary>Whether <c>models</c> restricts this key.</summary>
    public bool HasModels => _models is not null;

    /// <summary>Whether the key may ask for <paramref name="model"/> (a known model name; see the stage for none).</summary>
    public bool Allows(string model)
    {
        if (_models is null)
        {
            return true;
        }
        foreach (var glob in _models)
        {
            if (glob.IsMatch(model))
            {
                return true;
            }
        }
        return false;
    }

    /// <summary><c>llmproxy_upstream_tokens_total</c> of this key on one member of a group (bound once per member).</summary>
    public TokenCounters TokensOn(MemberMetrics member) =>
        _tokens.TryGetValue(member, out var counters) ? counters
            : _tokens.GetOrAdd(member, static (m, self) => new TokenCounters(self._metrics, m.Group, m.Upstream, self.Name), this);
}

/// <summary>
/// The client keys of one forward, with the one lookup the authentication stage needs: hash the presented key with
/// SHA-256 and compare the digest with every configured one in constant time (<see cref="CryptographicOperations.FixedTimeEquals"/>),
/// without stopping at a match, so the time taken says nothing about which key matched or how much of one did.
/// </summary>
internal sealed class ClientKeyTable
{
    private readonly ClientKeyRuntime[] _keys;
    private readonly byte[] _digests; // every key's digest, 32 bytes each, in key order

    /// <param name="previous">On reload, the forward's keys in the runtime being replaced: a key of the same name and the
    /// same key and limits (<c>ratelimit</c>, <c>tokensPerMinute</c>) keeps its limiter (request bucket and token budget),
    /// so a reload hands no client a fresh allowance — not when it only edits the key's <c>models</c> either. A changed
    /// limit, or a rotated key (a new credential, as an upstream's state follows its credential), is a new limiter.</param>
    /// <param name="cluster">SPEC §17: with <c>cluster.redis</c>, each key's <c>ratelimit</c> and <c>tokensPerMinute</c>
    /// are also a bucket and a budget on the cluster, shared by every instance (taken with the first attempt's
    /// admission).</param>
    public ClientKeyTable(IReadOnlyList<ClientKeyConfig> keys, string forward, ProxyMetrics metrics, TimeProvider time, ClientKeyTable? previous,
        Cluster.RedisCluster? cluster = null)
    {
        _keys = [.. keys.Select(k =>
        {
            var kept = previous?._keys.FirstOrDefault(p => p.Name == k.Name && p.Config.Key == k.Key && p.Config.Sha256 == k.Sha256
                && p.Config.Ratelimit == k.Ratelimit && p.Config.TokensPerMinute == k.TokensPerMinute);
            return new ClientKeyRuntime(k, forward, metrics, kept?.Limiter ?? new ClientKeyLimiter(k, time))
            {
                SharedRequests = cluster is not null && k.Ratelimit is { } r
                    ? new Cluster.SharedBucket(cluster, "fwd:" + forward + ":key", r.PerSecond, Math.Max(1, r.EffectiveBurst), isClientKey: true).For(k.Name)
                    : null,
                SharedTokens = cluster is not null && k.TokensPerMinute is { } tpm
                    ? new Cluster.SharedBudget(cluster, "fwd:" + forward + ":tpm:" + k.Name, tpm)
                    : null,
            };
        })];
        _digests = new byte[_keys.Length * SHA256.HashSizeInBytes];
        for (var i = 0; i < _keys.Length; i++)
        {
            _keys[i].Digest.CopyTo(_digests, i * SHA256.HashSizeInBytes);
        }
        NeedsFacts = _keys.Any(k => k.HasModels || k.Config.TokensPerMinute is not null);
    }

    public IReadOnlyList<ClientKeyRuntime> Keys => _keys;

    private long _digestsComputed;

    /// <summary>Presented keys hashed so far (for tests: a connection's repeated key is not hashed again).</summary>
    internal long DigestsComputed => Interlocked.Read(ref _digestsComputed);

    /// <summary>Whether some key restricts models or spends a token budget: the request's facts must be read.</summary>
    public bool NeedsFacts { get; }

    /// <summary>The key <paramref name="presented"/> is, or null. Constant time in the presented key's content for a
    /// given length, and the same work for every configured key whether or not it matches.</summary>
    public ClientKeyRuntime? Match(ReadOnlySpan<char> presented)
    {
        if (presented.IsEmpty || presented.Length > ClientKeyConfig.MaxKeyLength)
        {
            return null;
        }
        Interlocked.Increment(ref _digestsComputed);
        Span<byte> utf8 = stackalloc byte[ClientKeyConfig.MaxKeyLength * 3];
        var length = Encoding.UTF8.GetBytes(presented, utf8);
        Span<byte> digest = stackalloc byte[SHA256.HashSizeInBytes];
        SHA256.HashData(utf8[..length], digest);
        CryptographicOperations.ZeroMemory(utf8[..length]);
        var found = 0; // index + 1 of the match; digests are unique (checked at load), so at most one matches
        for (var i = 0; i < _keys.Length; i++)
        {
            var equal = CryptographicOperations.FixedTimeEquals(digest, _digests.AsSpan(i * SHA256.HashSizeInBytes, SHA256.HashSizeInBytes));
            // Branch-free select: -1 (all ones) when equal, 0 otherwise.
            found |= (i + 1) & -Convert.ToInt32(equal);
        }
        return found == 0 ? null : _keys[found - 1];
    }
}
