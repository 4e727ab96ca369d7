using LLMProxy.Cluster;
using LLMProxy.Configuration;
using LLMProxy.Tests.Configuration;
using StackExchange.Redis;

namespace LLMProxy.Tests.Cluster;

/// <summary><c>cluster.redis</c> (SPEC §17): what is accepted, what is refused with its path, and that the password
/// never appears in an error, in <c>-t</c> or in a log description.</summary>
public class ClusterConfigTests
{
    private static string WithCluster(string block) => ConfigTestYaml.Valid + "cluster:\n" + block;

    [Fact]
    public void Absent_NothingShared()
    {
        Assert.Null(ConfigTestYaml.LoadValid(ConfigTestYaml.Valid).Cluster);
    }

    [Fact]
    public void Url_WithDefaults()
    {
        var redis = ConfigTestYaml.LoadValid(WithCluster("  redis:\n    url: \"redis://127.0.0.1:6379\"\n")).Cluster!.Redis!;
        Assert.Equal(("llmproxy:", 50), (redis.Prefix, redis.Timeout));
    }

    [Theory]
    [InlineData("redis://:s3cret-pass@cache.internal:6380/2", "cache.internal", 6380, false, null, 2)]
    [InlineData("rediss://app:s3cret-pass@cache.internal", "cache.internal", 6379, true, "app", null)]
    [InlineData("redis://localhost", "localhost", 6379, false, null, null)]
    public void RedisUrl_Parsed(string url, string host, int port, bool ssl, string? user, int? db)
    {
        Assert.True(RedisUrl.TryParse(url, out var options, out var error), error);
        var endpoint = Assert.IsType<System.Net.DnsEndPoint>(Assert.Single(options!.EndPoints));
        Assert.Equal((host, port, ssl, user, db), (endpoint.Host, endpoint.Port, options.Ssl, options.User, options.DefaultDatabase));
        Assert.Equal(url.Contains("s3cret", StringComparison.Ordinal) ? "s3cret-pass" : null, options.Password);
        Assert.DoesNotContain("s3cret", RedisUrl.Describe(url), StringComparison.Ordinal);
    }

    [Fact]
    public void ConnectionString_Accepted()
    {
        Assert.True(RedisUrl.TryParse("cache1:6379,password=s3cret-pass,ssl=true,abortConnect=false", out var options, out _));
        Assert.Equal(("s3cret-pass", true), (options!.Password, options.Ssl));
        Assert.Equal("rediss://cache1:6379", RedisUrl.Describe("cache1:6379,password=s3cret-pass,ssl=true"));
    }

    [Theory]
    [InlineData("http://:s3cret-pass@cache:6379")]
    [InlineData("redis://:s3cret-pass@cache:6379/99")]
    [InlineData("redis://:s3cret-pass@cache:6379?db=1")]
    [InlineData("redis://:s3cret-pass@")]
    [InlineData(",password=s3cret-pass")]
    public void BadUrl_ErrorAtItsPath_WithoutThePassword(string url)
    {
        var result = ConfigTestYaml.Load(WithCluster($"  redis:\n    url: \"{url}\"\n"));
        var error = ConfigTestYaml.AssertError(result, "cluster.redis.url");
        Assert.DoesNotContain("s3cret", error.ToString(), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("    url: \"redis://cache:6379\"\n    timeout: 0\n", "cluster.redis.timeout")]
    [InlineData("    url: \"redis://cache:6379\"\n    prefix: \"has space\"\n", "cluster.redis.prefix")]
    [InlineData("    prefix: \"p:\"\n", "cluster.redis.url")]
    [InlineData("    url: \"redis://cache:6379\"\n    passwrd: x\n", "cluster.redis.passwrd")]
    public void BadSettings_Refused(string lines, string path)
    {
        ConfigTestYaml.AssertError(ConfigTestYaml.Load(WithCluster("  redis:\n" + lines)), path);
    }

    [Fact]
    public void Summary_ShowsTheEndpointOnly()
    {
        var config = ConfigTestYaml.LoadValid(WithCluster("  redis:\n    url: \"redis://ops:s3cret-pass@cache.internal:6380/1\"\n    prefix: \"team-a:\"\n"));
        var summary = ConfigSummary.Summarize(config);
        Assert.Contains("cluster: redis redis://cache.internal:6380/1  (prefix team-a:, timeout 50 ms)", summary, StringComparison.Ordinal);
        Assert.DoesNotContain("s3cret", summary, StringComparison.Ordinal);
        Assert.DoesNotContain("ops", summary, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("redis://ops:s3cret-pass@cache.internal:6380/1")]
    [InlineData("cache.internal:6380,password=s3cret-pass,ssl=true")]
    public void AdminConfigReport_NeverShowsThePassword(string url)
    {
        var config = ConfigTestYaml.LoadValid(WithCluster($"  redis:\n    url: \"{url}\"\n"));
        using var buffer = new MemoryStream();
        using (var json = new System.Text.Json.Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            LLMProxy.Admin.ConfigReport.Write(json, config);
            json.WriteEndObject();
        }
        var text = System.Text.Encoding.UTF8.GetString(buffer.ToArray());
        Assert.Contains("\"cluster\"", text, StringComparison.Ordinal);
        Assert.DoesNotContain("s3cret", text, StringComparison.Ordinal);
    }
}
