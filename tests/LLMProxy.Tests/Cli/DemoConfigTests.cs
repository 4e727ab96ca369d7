using System.Net;
using System.Text.Json;
using LLMProxy.Cli;
using LLMProxy.Mock;
using LLMProxy.Tests.Infrastructure;
using LLMProxy.Tests.Reliability;

namespace LLMProxy.Tests.Cli;

/// <summary>The demo's built-in config, run through the real pipeline against its own mock accounts: what the demo
/// promises to show a newcomer (a TPM budget, failover off a revoked key, a backup tier) really happens.</summary>
public class DemoConfigTests
{
    [Fact]
    public async Task Demo_RevokedKeyDisabledOnFirstUse_BackupTierIdle_BudgetVisible_EveryRequestServed()
    {
        var mocks = new List<MockServer>
        {
            await MockServer.StartAsync(new MockOptions { Port = 0, Name = "account-a" }),
            await MockServer.StartAsync(new MockOptions { Port = 0, Name = "account-b" }),
            // The demo's flaky account fails 30 % of requests; here it never does, so every count below is exact.
            await MockServer.StartAsync(new MockOptions { Port = 0, Name = "account-c-flaky" }),
        };
        mocks.AddRange(await DemoCommand.StartExtraAccountsAsync());
        try
        {
            await using var proxy = await TestProxy.StartAsync(DemoCommand.DemoConfig(3000, 9000, mocks));
            for (var i = 0; i < 10; i++)
            {
                using var r = await proxy.Client.SendAsync(ReliabilityKit.Chat());
                Assert.Equal(HttpStatusCode.OK, r.StatusCode);
            }

            var metrics = await proxy.Admin.GetStringAsync("/metrics");
            AssertSample(metrics, "llmproxy_upstream_requests_total{group=\"accounts\",upstream=\"account-d-revoked\",status_code=\"401\"}", 1);
            Assert.Equal(0, Sample(metrics, "llmproxy_upstream_requests_total{group=\"accounts\",upstream=\"account-e-backup\",status_code=\"200\"}"));
            AssertSample(metrics, "llmproxy_upstream_disabled{upstream=\"account-d-revoked\"}", 1);

            using var health = JsonDocument.Parse(await proxy.Admin.GetStringAsync("/health"));
            var upstreams = health.RootElement.GetProperty("groups")[0].GetProperty("upstreams").EnumerateArray()
                .ToDictionary(u => u.GetProperty("name").GetString()!);
            Assert.Equal("status_401", upstreams["account-d-revoked"].GetProperty("disabled").GetProperty("reason").GetString());
            Assert.Contains("20000", upstreams["account-a"].GetProperty("budgets").GetRawText());
        }
        finally
        {
            foreach (var m in mocks)
            {
                await m.DisposeAsync();
            }
        }
    }
}
