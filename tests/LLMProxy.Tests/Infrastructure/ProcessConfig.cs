namespace LLMProxy.Tests.Infrastructure;

/// <summary>Config files for the real binary (fixed ports chosen by the test, one forward "main", group "g").</summary>
public static class ProcessConfig
{
    /// <param name="groupExtra">Extra keys of group "g", indented by 4 spaces.</param>
    public static string Minimal(int port, int adminPort, string upstreamUrl, string extraServer = "", string groupExtra = "") => $"""
        httpServer:
          forwards:
            - name: main
              port: {port}
              address: "127.0.0.1"
              defaultGroup: g
          admin:
            port: {adminPort}
            address: "127.0.0.1"
        {extraServer}
        upstreams:
          - name: u1
            url: "{upstreamUrl}"
            auth:
              type: bearer
              token: "sk-cli-test-secret-4242"
        upstreamGroups:
          - name: g
            upstreams:
              - name: u1
        {groupExtra}
        """;
}
