using System.Net;
using System.Net.Sockets;
using LLMProxy.Configuration;
using LLMProxy.LoadBalancing;
using LLMProxy.Observability;
using LLMProxy.RateLimiting;
using Yarp.ReverseProxy.Forwarder;

namespace LLMProxy.Runtime;

/// <summary>
/// One upstream group, compiled: its members, balancer, retry policy and the single long-lived
/// connection pool every request of the group goes through.
/// </summary>
internal sealed class GroupRuntime : IDisposable, IMemberLoad
{
    private readonly bool[] _retryStatus = new bool[600];

    private readonly Shared<HttpMessageInvoker> _pool;

    /// <param name="previous">On reload, the group of the same name in the runtime being replaced: its balancer
    /// (rotation, smooth weights) is kept when the members and <c>balance</c> did not change, and its connection pool
    /// (open connections) when <c>httpClient</c> did not.</param>
    public GroupRuntime(UpstreamGroupConfig config, IReadOnlyDictionary<string, UpstreamRuntime> upstreams, ProxyMetrics metrics,
        GroupRuntime? previous = null)
    {
        Config = config;
        Name = config.Name;
        Members = [.. config.Upstreams.Select(m => upstreams[m.Name])];
        Policy = LoadBalancingPolicies.BuiltIn.Get(config.Balance.Strategy);
        StrategyLabel = Policy.Name;
        // A balancer's state is positions over this member list under this strategy: valid exactly while neither changed
        // (whether the members' own upstream settings changed does not matter to it).
        Balancer = previous is not null
            && ConfigEquality.Same(previous.Config.Upstreams, config.Upstreams)
            && ConfigEquality.Same(previous.Config.Balance, config.Balance)
            ? previous.Balancer
            : Policy.Create([.. config.Upstreams.Select(m => new BalancerMember(m.Name, m.Weight))]);
        (_tierOf, TierCount) = Tiers(config.Upstreams);
        AffinityKeys = config.Affinity is { } affinity
            ? [.. affinity.Keys.Select(k => AffinityKey.TryParse(k, out var key, out _) ? key : throw new ArgumentException($"invalid affinity key '{k}'"))]
            : [];
        HasBodyAffinity = AffinityKeys.Any(k => k.IsBody);
        // Stateless, so rebuilt on every reload: the same names and weights give the same mapping (SPEC §13.5).
        Affinity = AffinityKeys.Length > 0 ? new Rendezvous([.. config.Upstreams.Select(m => new BalancerMember(m.Name, m.Weight))], weighted: true) : null;
        Metrics = new GroupMetrics(metrics, Name);
        MemberMetrics = [.. Members.Select(m => new MemberMetrics(metrics, Name, m.Name, StrategyLabel))];
        MaxAttempts = Math.Max(1, Math.Min(config.Retry.Attempts, Members.Length));
        HasModelRules = Members.Any(m => m.HasModelRules);
        HasTokenBudgets = Members.Any(m => m.Tpm is not null);
        foreach (var code in config.Retry.StatusCodes)
        {
            if ((uint)code < (uint)_retryStatus.Length)
            {
                _retryStatus[code] = true;
            }
        }
        Backoff = TimeSpan.FromMilliseconds(config.Retry.Backoff);
        Agent = config.HttpClient.Agent;
        var proxy = config.HttpClient.Proxy is { } p ? OutboundProxy.Parse(p.Url) : null;
        ProxyAuthorization = proxy?.PreemptiveAuthorization;
        // The pool is shared with the previous runtime, which still sends its draining requests through it: each runtime
        // holds a reference and the handler is disposed with the last one.
        if (previous is not null && ConfigEquality.Same(previous.Config.HttpClient, config.HttpClient))
        {
            _pool = previous._pool.Share();
            OneSend = previous.OneSend;
        }
        else
        {
            OneSend = new OneSendHandler(CreateHandler(config.HttpClient, proxy));
            _pool = Shared<HttpMessageInvoker>.Create(new HttpMessageInvoker(OneSend, disposeHandler: true));
        }
        Invoker = _pool.Value;
        RequestConfig = new ForwarderRequestConfig
        {
            // Bounds the wait for response headers and every idle gap of the body — never the total.
            ActivityTimeout = TimeSpan.FromMilliseconds(config.HttpClient.Timeout.Request),
            Version = HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionOrLower,
            AllowResponseBuffering = false,
        };
    }

    public string Name { get; }
    public UpstreamGroupConfig Config { get; }
    public UpstreamRuntime[] Members { get; }
    public ILoadBalancingPolicy Policy { get; }
    /// <summary>The policy's name: the <c>strategy</c> label of metrics and the admin API.</summary>
    public string StrategyLabel { get; }
    public ILoadBalancer Balancer { get; }
    /// <summary>Where a request's affinity key is read, first present wins; empty without <c>affinity</c>.</summary>
    public AffinityKey[] AffinityKeys { get; }
    /// <summary>Whether an affinity key is read from the body, so the request's facts must be read.</summary>
    public bool HasBodyAffinity { get; }
    /// <summary>Rendezvous over the members for requests that carry an affinity key; null without <c>affinity</c>.</summary>
    public Rendezvous? Affinity { get; }
    /// <summary>Number of distinct member priorities; tier 0 is the highest priority.</summary>
    public int TierCount { get; }
    private readonly int[] _tierOf;
    public GroupMetrics Metrics { get; }
    /// <summary>Pre-bound metrics per member, same order as <see cref="Members"/>.</summary>
    public MemberMetrics[] MemberMetrics { get; }
    public int MaxAttempts { get; }
    /// <summary>Whether some member has <c>models</c> or <c>modelMap</c>, so the request's model must be known.</summary>
    public bool HasModelRules { get; }
    /// <summary>Whether some member has a <c>tokensPerMinute</c> budget, so the request's facts feed its estimate.</summary>
    public bool HasTokenBudgets { get; }

    /// <summary>Members that do not serve <paramref name="model"/>, skipped like members already tried; all of them
    /// means no member serves it.</summary>
    public MemberSet NotServing(string? model)
    {
        var set = default(MemberSet);
        for (var i = 0; i < Members.Length; i++)
        {
            if (!Members[i].Serves(model))
            {
                set.Add(i);
            }
        }
        return set;
    }

    public TimeSpan Backoff { get; }
    public string Agent { get; }
    /// <summary>Proxy-Authorization for plain-http upstreams behind an http(s) proxy with credentials; null otherwise.</summary>
    public string? ProxyAuthorization { get; }
    /// <summary>The group's connection pool; possibly shared with the runtimes before and after a reload.</summary>
    public HttpMessageInvoker Invoker { get; }

    /// <summary>The outermost handler of <see cref="Invoker"/> (tests read what it did).</summary>
    internal OneSendHandler OneSend { get; }
    public ForwarderRequestConfig RequestConfig { get; }

    public bool IsRetryStatus(int status) => (uint)status < (uint)_retryStatus.Length && _retryStatus[status];

    /// <summary>
    /// Chooses a member not in <paramref name="tried"/> and leases it for one
    /// attempt. Null when none can take the request; <paramref name="reason"/> then says why.
    /// </summary>
    /// <remarks>Priorities (SPEC §13.3): only the highest tier with an eligible member is offered to the chooser, so
    /// a lower tier serves only while every member above it is unavailable, and traffic returns as soon as one is back.
    /// The chooser is the rendezvous of <see cref="Affinity"/> when <paramref name="affinityKey"/> is given (§13.5),
    /// the group's balancer otherwise; either keeps its state across tiers (one balancer per group).</remarks>
    public UpstreamLease? Select(in BalancingContext context, in MemberSet tried, out Unavailability reason, string? affinityKey = null)
    {
        var keyHash = affinityKey is not null && Affinity is not null ? StableHash.OfString(affinityKey) : 0UL;
        var useAffinity = affinityKey is not null && Affinity is not null;
        var balancing = context.Load is null ? context with { Load = this } : context;
        var n = Members.Length;
        Span<bool> eligible = n <= 128 ? stackalloc bool[n] : new bool[n];
        var excluded = tried;
        reason = Unavailability.None;
        for (var round = 0; round < n; round++)
        {
            var any = false;
            for (var i = 0; i < n; i++)
            {
                if (excluded.Contains(i))
                {
                    eligible[i] = false;
                    continue;
                }
                var why = Members[i].Check(context.Tokens);
                eligible[i] = why == Unavailability.None;
                any |= eligible[i];
                if (why > reason)
                {
                    reason = why;
                }
            }
            if (!any)
            {
                break;
            }
            if (TierCount > 1)
            {
                KeepHighestTier(eligible);
            }
            var index = useAffinity ? Affinity!.Select(eligible, keyHash) : Balancer.Select(eligible, balancing);
            if (index < 0)
            {
                break;
            }
            if (Members[index].TryLease(index, MemberMetrics[index], context.Tokens) is { } lease)
            {
                reason = Unavailability.None;
                MemberMetrics[index].Selections.Inc();
                return lease;
            }
            // Lost a race for the last trial slot or token: exclude it (keeping why) and choose again.
            excluded.Add(index);
            var lost = Members[index].Check(context.Tokens);
            if (lost > reason)
            {
                reason = lost;
            }
        }
        if (reason == Unavailability.None)
        {
            // Every member was excluded because it was already tried.
            reason = Unavailability.BreakerOpen;
        }
        return null;
    }

    /// <summary>Clears every eligible entry outside the highest tier that has one (allocation-free).</summary>
    private void KeepHighestTier(Span<bool> eligible)
    {
        var top = int.MaxValue;
        for (var i = 0; i < eligible.Length; i++)
        {
            if (eligible[i] && _tierOf[i] < top)
            {
                top = _tierOf[i];
            }
        }
        for (var i = 0; i < eligible.Length; i++)
        {
            eligible[i] &= _tierOf[i] == top;
        }
    }

    /// <summary>Tier index per member (0 = highest priority) and the number of tiers.</summary>
    private static (int[] TierOf, int Count) Tiers(IReadOnlyList<GroupMemberConfig> members)
    {
        var priorities = members.Select(m => m.Priority).Distinct().OrderDescending().ToArray();
        return ([.. members.Select(m => Array.IndexOf(priorities, m.Priority))], priorities.Length);
    }

    int IMemberLoad.InFlight(int index) => Members[index].InFlight;

    // Tokens left now, declared or learned from the provider (least_loaded's tie-break); members limited by neither tie.
    long IMemberLoad.Headroom(int index) => Members[index].TokenHeadroom;

    /// <summary>Whether some member outside <paramref name="tried"/> is available right now for a request of
    /// <paramref name="tokens"/> estimated LLM tokens (0 = any request).</summary>
    public bool HasAlternative(in MemberSet tried, TokenNeed tokens = default)
    {
        for (var i = 0; i < Members.Length; i++)
        {
            if (tried.Contains(i))
            {
                continue;
            }
            if (Members[i].Check(tokens) == Unavailability.None)
            {
                return true;
            }
        }
        return false;
    }

    /// <summary>
    /// Whether some member is up: not disabled as a bad key and its breaker not open. A member that is only out of
    /// budget, cooling down after a 429 or at its concurrency limit is up — the proxy answers for it with 429 and
    /// Retry-After —, so readiness (<c>/health</c>) does not follow load: with keys shared by every replica, a probe
    /// that did would take all of them out of the Service at once.
    /// </summary>
    public bool HasHealthyMember()
    {
        foreach (var member in Members)
        {
            if (member.Check() is Unavailability.None or Unavailability.RateLimited)
            {
                return true;
            }
        }
        return false;
    }

    /// <summary>Earliest moment any member may be available again (for a request of <paramref name="tokens"/>
    /// estimated LLM tokens, as budgets see it), leaving out the members in <paramref name="skip"/> (they do not serve
    /// the request's model) and those that never come back by themselves (<see cref="UpstreamRuntime.RecoversByItself"/>):
    /// counted as "now", one of those made every 503 say <c>Retry-After: 1</c>. Null when no member will.</summary>
    public DateTimeOffset? EarliestRecovery(TimeProvider time, TokenNeed tokens, in MemberSet skip)
    {
        DateTimeOffset? best = null;
        for (var i = 0; i < Members.Length; i++)
        {
            var m = Members[i];
            if (skip.Contains(i) || !m.RecoversByItself)
            {
                continue;
            }
            var at = m.AvailableAt(time, tokens) ?? time.GetUtcNow();
            if (best is null || at < best)
            {
                best = at;
            }
        }
        return best;
    }

    private static SocketsHttpHandler CreateHandler(HttpClientConfig c, OutboundProxy? proxy)
    {
        var keepalive = c.Keepalive;
        var handler = new SocketsHttpHandler
        {
            UseProxy = proxy is not null,
            Proxy = proxy?.ToWebProxy(),
            AllowAutoRedirect = false,
            AutomaticDecompression = DecompressionMethods.None,
            UseCookies = false,
            EnableMultipleHttp2Connections = true,
            ConnectTimeout = TimeSpan.FromMilliseconds(c.Timeout.Connect),
            PooledConnectionIdleTimeout = TimeSpan.FromMilliseconds(c.Timeout.Idle),
            MaxConnectionsPerServer = c.Connect.MaxPerHost,
            ActivityHeadersPropagator = null,
            ConnectCallback = async (context, ct) =>
            {
                var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
                try
                {
                    if (keepalive > 0)
                    {
                        socket.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.KeepAlive, true);
                        var seconds = Math.Max(1, keepalive / 1000);
                        socket.SetSocketOption(SocketOptionLevel.Tcp, SocketOptionName.TcpKeepAliveTime, seconds);
                        socket.SetSocketOption(SocketOptionLevel.Tcp, SocketOptionName.TcpKeepAliveInterval, Math.Max(1, seconds / 4));
                    }
                    else
                    {
                        socket.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.KeepAlive, false);
                    }
                    await socket.ConnectAsync(context.DnsEndPoint, ct).ConfigureAwait(false);
                    return new NetworkStream(socket, ownsSocket: true);
                }
                catch
                {
                    socket.Dispose();
                    throw;
                }
            },
        };
        return handler;
    }

    /// <summary>Releases this runtime's reference to the connection pool (closed when no runtime uses it any more).</summary>
    public void Dispose() => _pool.Dispose();
}
