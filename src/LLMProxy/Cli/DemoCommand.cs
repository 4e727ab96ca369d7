using LLMProxy.Configuration;
using LLMProxy.Hosting;
using LLMProxy.Mock;

namespace LLMProxy.Cli;

/// <summary>
/// <c>llmproxy demo</c>: three mock accounts (one of them flaky) behind a proxy on :3000 (admin :9000),
/// from a built-in config, so a newcomer sees balancing, failover and streaming with one command.
/// </summary>
internal static class DemoCommand
{
    public static async Task<int> RunAsync(int port, int adminPort, bool json, TextWriter stdout, TextWriter stderr)
    {
        var mocks = new List<MockServer>();
        try
        {
            mocks.Add(await MockServer.StartAsync(new MockOptions { Port = 0, Name = "account-a", LatencyMs = 20 }).ConfigureAwait(false));
            mocks.Add(await MockServer.StartAsync(new MockOptions { Port = 0, Name = "account-b", LatencyMs = 20 }).ConfigureAwait(false));
            mocks.Add(await MockServer.StartAsync(new MockOptions { Port = 0, Name = "account-c-flaky", LatencyMs = 20, FailRate = 0.3 }).ConfigureAwait(false));
            mocks.AddRange(await StartExtraAccountsAsync().ConfigureAwait(false));

            var yaml = DemoConfig(port, adminPort, mocks);
            var result = ConfigLoader.LoadYaml(yaml);
            if (!result.Success)
            {
                foreach (var e in result.Errors)
                {
                    stderr.WriteLine($"llmproxy demo: built-in config error: {e}");
                }
                return ExitCodes.ConfigOrStartup;
            }
            using var loggerFactory = LoggingSetup.Create(json, release: true, out var logOutput);
            using var flushedAtExit = logOutput; // the factory does not dispose a provider it was given (ServeCommand)
            return await ServeCommand.RunHostAsync(result.Config!, loggerFactory, new ProxyHostOptions(), TimeSpan.FromSeconds(5), stderr,
                host =>
                {
                    var p = host.ForwardPorts["demo"];
                    logOutput.Flush(); // the ready lines first, then how to try it
                    stdout.WriteLine();
                    stdout.WriteLine("LLMProxy demo is running: 5 mock accounts behind one endpoint — account-a has a 20,000 tokens/minute");
                    stdout.WriteLine("budget, account-c fails 30% of requests, account-d's key is revoked (it answers 401 and is disabled on first");
                    stdout.WriteLine("use), account-e is a backup that serves only when the others cannot.");
                    stdout.WriteLine("Try:");
                    stdout.WriteLine($"  curl -s http://127.0.0.1:{p}/v1/chat/completions -H 'Content-Type: application/json' -d '{{\"model\":\"gpt-4o-mini\",\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}'");
                    stdout.WriteLine($"  curl -N http://127.0.0.1:{p}/v1/chat/completions -H 'Content-Type: application/json' -d '{{\"model\":\"gpt-4o-mini\",\"stream\":true,\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}'");
                    stdout.WriteLine($"  curl -s http://127.0.0.1:{host.AdminPort}/health ; curl -s http://127.0.0.1:{host.AdminPort}/metrics | grep llmproxy_");
                    stdout.WriteLine($"Status page: http://127.0.0.1:{host.AdminPort}/");
                    stdout.WriteLine("Press Ctrl-C to stop.");
                }).ConfigureAwait(false);
        }
        finally
        {
            foreach (var m in mocks)
            {
                await m.DisposeAsync().ConfigureAwait(false);
            }
        }
    }

    /// <summary>The revoked account (every answer 401) and the backup account of the demo: mocks 3 and 4.</summary>
    internal static async Task<MockServer[]> StartExtraAccountsAsync() =>
    [
        await MockServer.StartAsync(new MockOptions { Port = 0, Name = "account-d-revoked", LatencyMs = 20, Status = 401 }).ConfigureAwait(false),
        await MockServer.StartAsync(new MockOptions { Port = 0, Name = "account-e-backup", LatencyMs = 20 }).ConfigureAwait(false),
    ];

    internal static string DemoConfig(int port, int adminPort, IReadOnlyList<MockServer> mocks) => $"""
        httpServer:
          forwards:
            - name: demo
              port: {port}
              address: "127.0.0.1"
              defaultGroup: accounts
              ratelimit:
                perSecond: 50
                burst: 100
          admin:
            port: {adminPort}
            address: "127.0.0.1"
        upstreams:
          - name: account-a
            url: "{mocks[0].BaseUrl.ToString().TrimEnd('/')}"
            auth:
              type: bearer
              token: "sk-demo-account-a-0001"
            ratelimit:
              perSecond: 100
              tokensPerMinute: 20000
            breaker:
              threshold: 0.5
              cooldown: 5000
              minRequests: 5
          - name: account-b
            url: "{mocks[1].BaseUrl.ToString().TrimEnd('/')}"
            auth:
              type: bearer
              token: "sk-demo-account-b-0002"
            breaker:
              threshold: 0.5
              cooldown: 5000
              minRequests: 5
          - name: account-c-flaky
            url: "{mocks[2].BaseUrl.ToString().TrimEnd('/')}"
            auth:
              type: bearer
              token: "sk-demo-account-c-0003"
            breaker:
              threshold: 0.5
              cooldown: 5000
              minRequests: 5
          - name: account-d-revoked
            url: "{mocks[3].BaseUrl.ToString().TrimEnd('/')}"
            auth:
              type: bearer
              token: "sk-demo-account-d-0004"
            recheck: 60000
          - name: account-e-backup
            url: "{mocks[4].BaseUrl.ToString().TrimEnd('/')}"
            auth:
              type: bearer
              token: "sk-demo-account-e-0005"
        upstreamGroups:
          - name: accounts
            upstreams:
              - name: account-a
              - name: account-b
              - name: account-c-flaky
              - name: account-d-revoked
              - name: account-e-backup
                priority: -1
            balance:
              strategy: roundrobin
        """;
}
