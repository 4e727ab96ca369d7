using System.Net;
using LLMProxy.Cli;
using LLMProxy.Configuration;
using LLMProxy.Hosting;
using LLMProxy.Tests.Forwarding;
using LLMProxy.Tests.Infrastructure;

namespace LLMProxy.Tests.Cli;

public class LoggingSetupTests
{
    [Fact]
    public async Task ReleaseJson_UnreachableUpstream_ProxyLinesOnly_NoYarpStackTrace()
    {
        // Nothing listens on the upstream's port: every attempt is a connect failure, which YARP's forwarder logs as a
        // Warning (ForwardingError) with the exception and its stack trace — per request, beside the proxy's own lines.
        var url = $"http://127.0.0.1:{StreamingAndErrorTests.FreePort()}";
        var config = ConfigLoader.LoadYaml(TestProxy.Config($"- name: down\n  url: \"{url}\"", "- name: down"));
        Assert.True(config.Success, string.Join("; ", config.Errors));
        var written = new StringWriter();
        using (var logging = LoggingSetup.Create(TextWriter.Synchronized(written), json: true, release: true, out var output))
        {
            var host = await ProxyHost.StartAsync(config.Config!, logging, new ProxyHostOptions { EphemeralPorts = true, ProcessMetrics = false });
            try
            {
                using var client = new HttpClient();
                using var response = await client.GetAsync($"http://127.0.0.1:{host.ForwardPorts["fwd"]}/v1/models");
                Assert.Equal(HttpStatusCode.BadGateway, response.StatusCode);
            }
            finally
            {
                await host.StopAsync(TimeSpan.FromSeconds(2));
                await host.DisposeAsync();
            }
            output.Flush();
        }

        var lines = written.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        // The proxy's own account of the failure: the attempt (with its kind) and the access line.
        Assert.Contains(lines, l => l.Contains("upstream attempt failed: group=g upstream=down error=connect", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.Contains("GET /v1/models 502 forward=fwd upstream=down", StringComparison.Ordinal));
        Assert.DoesNotContain(lines, l => l.Contains("\"Category\":\"Yarp.", StringComparison.Ordinal));
        Assert.DoesNotContain(lines, l => l.Contains("\"Exception\":", StringComparison.Ordinal));
    }
}
