using LLMProxy.Configuration;
using static LLMProxy.Tests.Configuration.ConfigTestYaml;

namespace LLMProxy.Tests.Configuration;

/// <summary>Configs written for the reference design load unchanged (README §4), with the §5 defaults applied.</summary>
public class ConfigLoaderReferenceTests
{
    private const string ReferenceMinimal = """
        httpServer:
            forwards:
                - name: simple_forward
                  port: 3000
                  defaultGroup: simple_group

        upstreams:
            - name: openai_api
              url: "https://api.openai.com/v1/chat/completions"
              auth:
                  type: bearer
                  token: "YOUR_API_KEY_HERE"

        upstreamGroups:
            - name: simple_group
              upstreams:
                  - name: openai_api
        """;

    // The three section examples of README §4, concatenated: together they form a complete config.
    private const string ReferenceSections = """
        httpServer:
            forwards:
                - name: to_mixgroup
                  port: 3000 # 监听端口
                  address: "0.0.0.0" # 监听地址
                  defaultGroup: "mixgroup" # 默认上游组
                  ratelimit: # IP 限流
                      perSecond: 100
                      burst: 200
                  timeout: # 连接超时
                      idle: 60000
                      read: 30000
                      write: 30000
            admin: # 管理接口
                port: 9000
                address: "0.0.0.0"

        upstreams:
            - name: openai_primary
              url: "https://api.openai.com/v1/chat/completions"
              auth:
                  type: "bearer"
                  token: "YOUR_OPENAI_API_KEY_HERE"
              breaker: # 熔断器配置
                  threshold: 0.5 # 失败率阈值
                  cooldown: 30000 # 冷却时间(ms)
                  maxRequests: 3 # 半开状态最大请求数
              ratelimit: # 上游限流
                  perSecond: 100

        upstreamGroups:
            - name: mixgroup
              upstreams:
                  - name: openai_primary
                    weight: 8 # 权重(仅weighted_roundrobin)
              balance:
                  strategy: "roundrobin" # 负载均衡策略
              httpClient:
                  keepalive: 60000 # TCP Keepalive
                  timeout:
                      connect: 10000 # 连接超时
                      request: 300000 # 请求超时
                      idle: 60000 # 空闲超时
        """;

    [Fact]
    public void LoadYaml_ReferenceMinimalExample_LoadsWithDefaults()
    {
        var config = LoadValid(ReferenceMinimal);

        var forward = Assert.Single(config.HttpServer.Forwards);
        Assert.Equal("simple_forward", forward.Name);
        Assert.Equal(3000, forward.Port);
        Assert.Equal("0.0.0.0", forward.Address);
        Assert.Equal("simple_group", forward.DefaultGroup);
        Assert.Null(forward.Ratelimit); // absent block = feature off
        Assert.Equal(60000, forward.Timeout.Idle);
        Assert.Equal(30000, forward.Timeout.Read);
        Assert.Equal(30000, forward.Timeout.Write);
        Assert.Empty(forward.TrustedProxies);
        Assert.Equal(64L * 1024 * 1024, forward.MaxRequestBodySize);
        Assert.Equal(10000, forward.MaxConnections);

        Assert.Equal(9000, config.HttpServer.Admin.Port);
        Assert.Equal("0.0.0.0", config.HttpServer.Admin.Address);
        Assert.Null(config.HttpServer.Admin.Token);
        Assert.Equal(30000, config.HttpServer.ShutdownTimeout);

        var upstream = Assert.Single(config.Upstreams);
        Assert.Equal("https://api.openai.com/v1/chat/completions", upstream.Url);
        Assert.Equal(AuthType.Bearer, upstream.Auth.Type);
        Assert.Equal("YOUR_API_KEY_HERE", upstream.Auth.Token);
        Assert.Empty(upstream.Headers);
        Assert.Null(upstream.Breaker);
        Assert.Null(upstream.Ratelimit);

        var group = Assert.Single(config.UpstreamGroups);
        Assert.Equal("openai_api", Assert.Single(group.Upstreams).Name);
        Assert.Equal(1, group.Upstreams[0].Weight);
        Assert.Equal("roundrobin", group.Balance.Strategy);
        Assert.Equal("LLMProxy/1.0", group.HttpClient.Agent);
        Assert.Equal(60000, group.HttpClient.Keepalive);
        Assert.Equal(100, group.HttpClient.Connect.IdleTotal);
        Assert.Equal(10, group.HttpClient.Connect.IdlePerHost);
        Assert.Equal(50, group.HttpClient.Connect.MaxPerHost);
        Assert.Equal(10000, group.HttpClient.Timeout.Connect);
        Assert.Equal(300000, group.HttpClient.Timeout.Request);
        Assert.Equal(60000, group.HttpClient.Timeout.Idle);
        Assert.Null(group.HttpClient.Proxy);
        Assert.Equal(3, group.Retry.Attempts);
        Assert.Equal([429, 500, 502, 503, 504], group.Retry.StatusCodes);
        Assert.Equal(0, group.Retry.Backoff);
    }

    [Fact]
    public void LoadYaml_ReferenceSectionExamples_LoadWithStatedValuesAndDefaultsForOmittedKeys()
    {
        var config = LoadValid(ReferenceSections);

        var forward = Assert.Single(config.HttpServer.Forwards);
        Assert.Equal(new RateLimitConfig { PerSecond = 100, Burst = 200 }, forward.Ratelimit);
        Assert.Equal(new ServerTimeoutConfig(), forward.Timeout);
        Assert.Equal(new AdminConfig(), config.HttpServer.Admin);

        var upstream = Assert.Single(config.Upstreams);
        Assert.Equal(AuthType.Bearer, upstream.Auth.Type);
        // Stated keys keep their values; the omitted interval and minRequests get their defaults.
        Assert.Equal(new BreakerConfig { Threshold = 0.5, Cooldown = 30000, MaxRequests = 3, Interval = 10000, MinRequests = 10 }, upstream.Breaker);
        Assert.NotNull(upstream.Ratelimit);
        Assert.Equal(100, upstream.Ratelimit.PerSecond);
        Assert.Null(upstream.Ratelimit.Burst);
        Assert.Equal(100, upstream.Ratelimit.EffectiveBurst);

        var group = Assert.Single(config.UpstreamGroups);
        Assert.Equal(8, Assert.Single(group.Upstreams).Weight);
        Assert.Equal("roundrobin", group.Balance.Strategy);
        Assert.Equal("LLMProxy/1.0", group.HttpClient.Agent);
        Assert.Equal(new ConnectConfig(), group.HttpClient.Connect);
        Assert.Equal(new ClientTimeoutConfig(), group.HttpClient.Timeout);
    }

    [Fact]
    public void DefaultConfigFile_LoadFile_HasNoErrors()
    {
        var result = ConfigLoader.LoadFile(DefaultConfigPath, _ => null);

        Assert.True(result.Success, "config.default.yaml must load without errors:\n" + Describe(result));
    }

    [Fact]
    public void DefaultConfigFile_Values_EqualRecordDefaults()
    {
        var config = ConfigLoader.LoadFile(DefaultConfigPath, _ => null).Config!;

        var forward = Assert.Single(config.HttpServer.Forwards);
        Assert.Equal(3000, forward.Port);
        Assert.Equal("0.0.0.0", forward.Address);
        Assert.Equal(new RateLimitConfig(), forward.Ratelimit);
        Assert.Equal(new ServerTimeoutConfig(), forward.Timeout);
        Assert.Empty(forward.TrustedProxies);
        Assert.Equal(64L * 1024 * 1024, forward.MaxRequestBodySize);
        Assert.Equal(new ForwardConfig { Name = "", Port = 1, DefaultGroup = "" }.MaxConnections, forward.MaxConnections);
        Assert.Equal(new AdminConfig(), config.HttpServer.Admin);
        Assert.Equal(30000, config.HttpServer.ShutdownTimeout);

        Assert.Equal(2, config.Upstreams.Count);
        var primary = config.Upstreams[0];
        Assert.Equal(AuthType.Bearer, primary.Auth.Type);
        Assert.Equal(new BreakerConfig(), primary.Breaker);
        Assert.Equal(new UpstreamRateLimitConfig().PerSecond, primary.Ratelimit!.PerSecond);
        Assert.Equal(primary.Ratelimit.PerSecond, primary.Ratelimit.EffectiveBurst);

        var group = Assert.Single(config.UpstreamGroups);
        Assert.Equal(["openai_primary", "openai_backup"], group.Upstreams.Select(m => m.Name));
        Assert.All(group.Upstreams, m => Assert.Equal(1, m.Weight));
        Assert.Equal(new BalanceConfig(), group.Balance);
        var client = group.HttpClient;
        Assert.Equal((new HttpClientConfig().Agent, 60000), (client.Agent, client.Keepalive));
        Assert.Equal(new ConnectConfig(), client.Connect);
        Assert.Equal(new ClientTimeoutConfig(), client.Timeout);
        Assert.Null(client.Proxy);
        var defaults = new RetryConfig();
        Assert.Equal(defaults.Attempts, group.Retry.Attempts);
        Assert.Equal(defaults.StatusCodes, group.Retry.StatusCodes);
        Assert.Equal(defaults.Backoff, group.Retry.Backoff);
    }

    [Fact]
    public void DefaultConfigFile_Text_DocumentsEveryKnownKey()
    {
        var text = File.ReadAllText(DefaultConfigPath);

        var missing = ConfigKeys.All.Where(key => !text.Contains(key + ":", StringComparison.Ordinal)).ToList();

        Assert.True(missing.Count == 0, "config.default.yaml does not mention: " + string.Join(", ", missing));
    }
}
