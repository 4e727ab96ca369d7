using LLMProxy.Configuration;
using LLMProxy.Hosting;

namespace LLMProxy.Tests.Hosting;

public class FileDescriptorBudgetTests
{
    [Fact]
    public void Needed_SumsForwardCapsAndUpstreamPoolsPerDistinctHost_PlusReserve()
    {
        var yaml = """
            httpServer:
              forwards:
                - name: a
                  port: 3000
                  defaultGroup: g1
                  maxConnections: 1000
                - name: b
                  port: 3001
                  defaultGroup: g2
            upstreams:
              - name: u1
                url: "https://api.example.com/v1/chat/completions"
              - name: u2
                url: "https://api.example.com/v1/embeddings"
              - name: u3
                url: "http://10.0.0.7:8080"
            upstreamGroups:
              - name: g1
                upstreams:
                  - name: u1
                  - name: u2
                  - name: u3
                httpClient:
                  connect:
                    maxPerHost: 20
              - name: g2
                upstreams:
                  - name: u3
            """;
        var config = ConfigLoader.LoadYaml(yaml).Config!;

        // Forwards 1000 + 10000; g1: 2 hosts × 20; g2: 1 host × 50.
        Assert.Equal(1000 + 10000 + 40 + 50 + FileDescriptorBudget.Reserve, FileDescriptorBudget.Needed(config));
    }

    [Theory]
    [InlineData("Max open files            1024                 524288               files     ", 1024L)]
    [InlineData("Max open files            unlimited            unlimited            files     ", null)]
    [InlineData("Max processes             63413                63413                processes ", null)]
    public void ParseOpenFileLimit_ReadsSoftLimitOfProcLimits(string line, long? expected) =>
        Assert.Equal(expected, FileDescriptorBudget.ParseOpenFileLimit("Limit                     Soft Limit           Hard Limit           Units     \n" + line + "\n"));
}
